"""The ``pvnas`` command line (DESIGN §6): thin typed wrappers over the Python API.

User mistakes (bad paths, specs, presets, genotypes, configs) end in one line on stderr and exit
code 2; ``--debug`` shows the traceback instead. Commands that print JSON print nothing else.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from pvnas.errors import ConfigError, PvnasError

app = typer.Typer(
    name="pvnas",
    help="Practical video neural architecture search: search, derive, retrain, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("pvnas")
_debug = False


class Schedule(str, Enum):
    step = "step"
    cosine = "cosine"


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
    log_level: str = typer.Option("INFO", "--log-level", help="Python logging level (DEBUG, INFO, WARNING)."),
) -> None:
    global _debug
    _debug = debug
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise ConfigError(f"--log-level must be one of DEBUG, INFO, WARNING, ERROR; got {log_level!r}")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def is_main_process() -> bool:
    """Rank 0 under torchrun (or a plain single process): the only one that prints results."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2))


@app.command()
def search(
    data: str = typer.Option(..., "--data", help="Dataset spec, e.g. synthetic, demo, ucf101:ROOT."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or continue with --resume)."),
    preset: str = typer.Option("search", "--preset", help="search (paper), tiny, demo."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Search epochs (preset default)."),
    seed: int = typer.Option(0, "--seed"),
    schedule: Schedule = typer.Option(Schedule.step, "--schedule", help="Weight LR schedule."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels C."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Loader worker processes."),
    impl: Optional[str] = typer.Option(None, "--impl", help="Supernet cells: fast (default) or reference."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN/checkpoint.pt."),
    checkpoint_every: Optional[float] = typer.Option(
        None, "--checkpoint-every", help="Also checkpoint every N minutes (besides every epoch)."
    ),
) -> None:
    """Supernet search (paper Alg. 1); writes genotype.json, alphas/, metrics.jsonl, checkpoint.pt."""
    from pvnas.config import SEARCH_PRESETS, get_preset, override
    from pvnas.nn.supernet import DEFAULT_IMPL
    from pvnas.search.loop import run_search

    cfg = override(
        get_preset(SEARCH_PRESETS, preset),
        epochs=epochs, seed=seed, schedule=schedule.value, batch_size=batch_size, channels=channels, workers=workers,
    )
    for name, value in (("--epochs", cfg.epochs), ("--batch-size", cfg.batch_size), ("--channels", cfg.channels)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    result = run_search(
        cfg, data, out, resume=resume, impl=impl or DEFAULT_IMPL, preset=preset, checkpoint_every=checkpoint_every
    )
    if is_main_process():
        typer.echo(result.genotype.describe())
        typer.echo(f"genotype: {out / 'genotype.json'}")


@app.command()
def derive(
    run: Path = typer.Argument(..., help="Search run directory."),
    epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch whose alphas to use (default: last)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Genotype JSON to write (default: stdout)."),
) -> None:
    """Derive a genotype from the alphas of any saved epoch (paper Table 3 "stop at epoch")."""
    import torch

    from pvnas.space.genotype import Genotype

    alpha_dir = run / "alphas"
    if not alpha_dir.is_dir():
        raise ConfigError(f"{run}: not a search run directory (no alphas/ folder)")
    saved = sorted(int(p.stem.split("_")[1]) for p in alpha_dir.glob("epoch_*.pt"))
    if not saved:
        raise ConfigError(f"{alpha_dir}: no epoch_NNN.pt files yet")
    epoch = saved[-1] if epoch is None else epoch
    path = alpha_dir / f"epoch_{epoch:03d}.pt"
    if not path.exists():
        raise ConfigError(f"--epoch {epoch}: {path} does not exist; saved epochs are {saved[0]}..{saved[-1]}")
    meta = {"source": "search", "epoch": epoch, "run": str(run)}
    config = run / "config.yaml"
    if config.exists():
        from pvnas.engine.rundir import load_yaml

        meta["dataset"] = load_yaml(config).get("data")
    genotype = Genotype.derive(torch.load(path, map_location="cpu"), meta=meta)
    if output is None:
        _print_json(genotype.to_dict())
    else:
        genotype.save(output)
        log.info("wrote %s (epoch %d)", output, epoch)


@app.command("random")
def random_genotype(
    seed: int = typer.Option(0, "--seed"),
    min_conv: int = typer.Option(4, "--min-conv", help="At least this many conv ops per cell (paper: 4)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Genotype JSON to write (default: stdout)."),
) -> None:
    """A random genotype of the search space (paper Table 3 random-wired baseline)."""
    from pvnas.space.genotype import Genotype

    genotype = Genotype.random(seed, min_conv=min_conv)
    if output is None:
        _print_json(genotype.to_dict())
    else:
        genotype.save(output)
        log.info("wrote %s", output)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    from pvnas.engine.runtime import Preempted

    try:
        app(args=argv, standalone_mode=False)
    except Preempted as exc:
        typer.echo(f"preempted: {exc}", err=True)
        return exc.exit_code
    except PvnasError as exc:
        if _debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return 2
        raise
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
