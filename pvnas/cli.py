"""The ``pvnas`` command line (docs/design.md §6): thin typed wrappers over the Python API.

User mistakes (bad paths, specs, presets, genotypes, configs) end in one line on stderr and exit
code 2; ``--debug`` (anywhere on the line) shows the traceback too. Commands that print JSON print nothing else.
"""

from __future__ import annotations

import os

# torch's OpenMP threads spin at every barrier; beside one other busy process a tiny search ran ~20x slower.
# Passive waiting costs ~5% alone (README, troubleshooting). It must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from enum import Enum  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

import typer  # noqa: E402

from pvnas.errors import ConfigError, PvnasError  # noqa: E402
from pvnas.lr_schedules import SEARCH_SCHEDULES  # noqa: E402

app = typer.Typer(
    name="pvnas",
    help="Practical video neural architecture search: search, derive, retrain, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("pvnas")
_debug = False


def _print_version(value: bool) -> None:
    if value:
        from pvnas.version import __version__

        typer.echo(f"pvnas {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors (also after the command's name)."),
    log_level: str = typer.Option("INFO", "--log-level", help="Python logging level (DEBUG, INFO, WARNING)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    global _debug
    _debug = _debug or debug
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise ConfigError(f"--log-level must be one of DEBUG, INFO, WARNING, ERROR; got {log_level!r}")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


FRAMES_OPT = typer.Option(None, "--frames", help="Frames per clip (preset default; the window scales with it).")
CROP_OPT = typer.Option(None, "--crop", help="Crop size in pixels (preset default).")
SCALE_OPT = typer.Option(None, "--scale", help="Random short-side range MIN,MAX before cropping (preset default).")
WORKERS_OPT = typer.Option(None, "--workers", help="Loader worker processes.")
THREADS_OPT = typer.Option(
    None, "--threads", help="Torch threads on CPU (default: the preset's, 1 for tiny/demo, else every core; 0: every core).")
RESUME_OPT = typer.Option(
    None, "--resume", metavar="[auto]", help="Continue from RUN/checkpoint.pt. `--resume auto`: start, continue, or "
    "(finished) do nothing, whatever RUN needs: one command line for requeued and restarted jobs.")
OVERWRITE_OPT = typer.Option(False, "--overwrite", help="Replace the run already in --out (without it, it is kept).")
CHECKPOINT_EVERY_OPT = typer.Option(None, "--checkpoint-every", help="Also checkpoint every N minutes (besides every epoch).")
TENSORBOARD_OPT = typer.Option(False, "--tensorboard", help="Also log to RUN/tensorboard.")
COMPILE_OPT = typer.Option(False, "--compile", help="Run the network through torch.compile (off: on CPU it does not pay).")
CONFIG_OPT = typer.Option(
    None, "--config", help="Start from a run's config.yaml (or any YAML of that schema); the flags given override it.")
# the top-level keys of a run's config.yaml besides its command's section(s): what the run was, not settings
RUN_KEYS = ("command", "version", "preset", "data", "world_size", "classes", "compile", "restarts")


def _resume(value: str | None) -> bool | str:
    """``--resume`` alone (main() gives it the value ""), ``--resume auto``, or absent."""
    if value is None:
        return False
    if value not in ("", "auto"):
        raise ConfigError(f"--resume takes no value or `auto`, got {value!r}")
    return value or True


def remedy_options(at_derive: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """One option per registered search remedy (``--skip-noise``, ...; :mod:`pvnas.search.remedies`), added to a
    command whose ``remedies`` parameter receives the given ones as ``{name: value}``; ``at_derive``: only the
    remedies that change the derivation (``pvnas derive`` overrides the run's values with them)."""
    from pvnas.config import SEARCH_PRESETS
    from pvnas.search.remedies import REMEDIES

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        chosen = {name: cls for name, cls in REMEDIES.items() if cls.at_derive or not at_derive}
        signature = inspect.signature(command)
        params = [p for p in signature.parameters.values() if p.name != "remedies"]
        presets = lambda name: ", ".join(f"{p} {c.remedies.get(name, REMEDIES[name].off)}"  # noqa: E731
                                         for p, c in SEARCH_PRESETS.items())
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[cls.type],
                                   default=typer.Option(None, cls.flag(), help=f"{cls.help} Presets: {presets(name)}."))
                 for name, cls in chosen.items()]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            given = {name: value for name in chosen if (value := kwargs.pop(name, None)) is not None}
            command(**kwargs, remedies=given)

        wrapper.__signature__ = signature.replace(parameters=params + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params + added}
        return wrapper

    return decorate


def _config_file(path: Path | None, command: str, sections: tuple[str, ...]) -> dict[str, Any]:
    """The ``--config`` file of ``command`` as a mapping (empty without one); a key that is neither a run key nor
    one of ``sections`` is refused by name, as is another command's config. Its sections are checked field by
    field by :func:`pvnas.config.apply_values`."""
    if path is None:
        return {}
    from pvnas.runtime.rundir import load_yaml

    data = load_yaml(path)
    if data.get("command", command) != command:
        raise ConfigError(f"--config {path} is the config of a `pvnas {data['command']}` run, not a `pvnas {command}` one")
    allowed = RUN_KEYS + sections
    for key in data:
        if key not in allowed:
            raise ConfigError(f"--config {path}: unknown key {key!r}; a `pvnas {command}` config has: "
                              f"{', '.join(allowed)}")
    return data


def _from_file(presets: dict[str, Any], preset: str | None, default: str, file: dict[str, Any], section: str,
               path: Path | None) -> tuple[Any, str]:
    """The base config of a run and its preset name: ``--preset``, else the file's preset, else ``default``; then
    the file's ``section`` over it (what the file leaves out stays the preset's)."""
    from pvnas.config import apply_values, get_preset

    name = preset or (file.get("preset") if file.get("preset") in presets else None) or default
    base = get_preset(presets, name)
    if section in file:
        base = apply_values(base, file[section], f"--config {path}: {section}")
    return base, preset or file.get("preset") or default


def _required(data: str | None, file: dict[str, Any]) -> str:
    """``--data``, else the --config file's."""
    if data is None and not isinstance(file.get("data"), str):
        raise ConfigError("give --data SPEC (or a --config file that names its data)")
    return data if data is not None else file["data"]


def _renamed(value: Any, old_value: Any, name: str, old: str) -> Any:
    """An option given by its name or by the old name it replaced (still accepted, hidden from --help)."""
    if old_value is None:
        return value
    if value is not None:
        raise ConfigError(f"give {name} or its old name {old}, not both")
    return old_value


def is_main_process() -> bool:
    """Rank 0 under torchrun (or a plain single process): the only one that prints results."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2))


@app.command()
@remedy_options(at_derive=False)
def search(
    data: Optional[str] = typer.Option(None, "--data", help="Dataset spec, e.g. synthetic, demo, ucf101:ROOT "
                                       "(required unless the --config file names one)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or continue with --resume)."),
    config: Optional[Path] = CONFIG_OPT,
    preset: Optional[str] = typer.Option(None, "--preset", help="search (paper, default), tiny, demo."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Search epochs (preset default)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    schedule: Optional[str] = typer.Option(
        None, "--schedule", help=f"Weight LR schedule: {', '.join(SEARCH_SCHEDULES)} (paper §3.3; preset default: converge)."),
    alpha_lr: Optional[float] = typer.Option(None, "--alpha-lr", help="Adam lr of the alphas (preset default)."),
    alpha_lr_budget: Optional[float] = typer.Option(
        None, "--alpha-lr-budget", help="Alpha lr x alpha updates: the lr follows from the run's length (preset default)."),
    alpha_warmup: Optional[float] = typer.Option(
        None, "--alpha-warmup", help="Share of the steps that train the weights only, alphas frozen (preset default)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels C."),
    workers: Optional[int] = WORKERS_OPT,
    threads: Optional[int] = THREADS_OPT,
    impl: Optional[str] = typer.Option(None, "--impl", help="Supernet cells: fast (default) or reference."),
    resume: Optional[str] = RESUME_OPT,
    overwrite: bool = OVERWRITE_OPT,
    checkpoint_every: Optional[float] = CHECKPOINT_EVERY_OPT,
    tensorboard: bool = TENSORBOARD_OPT,
    frames: Optional[int] = FRAMES_OPT,
    crop: Optional[int] = CROP_OPT,
    scale: Optional[str] = SCALE_OPT,
    partial_channels: Optional[int] = typer.Option(None, "--partial-channels", help="PC-DARTS: mix ops on 1/K of the channels."),
    edge_norm: bool = typer.Option(False, "--edge-norm", help="PC-DARTS edge normalisation (needs the fast impl)."),
    compile: bool = COMPILE_OPT,
    remedies: Optional[dict] = None,
) -> None:
    """Supernet search (paper Alg. 1); writes genotype.json, alphas/, metrics.jsonl, checkpoint.pt."""
    import dataclasses

    from pvnas.config import SEARCH_PRESETS, RunOptions, override, override_clip
    from pvnas.search.loop import run_search
    from pvnas.search.remedies import remedies_of, unknown

    file = _config_file(config, "search", ("search",))
    unknown((file.get("search") or {}).get("remedies") or {}, f"--config {config}: search.remedies")
    base, preset = _from_file(SEARCH_PRESETS, preset, "search", file, "search", config)
    data = _required(data, file)
    compile = compile or bool(file.get("compile", False))
    cfg = override(
        base, epochs=epochs, seed=seed, schedule=schedule, a_warmup=alpha_warmup,
        batch_size=batch_size, channels=channels, workers=workers, threads=threads,
        impl=impl, remedies={**base.remedies, **(remedies or {})},
        clip=override_clip(base.clip, frames, crop, scale), partial_channels=partial_channels, edge_norm=edge_norm or None,
    )
    remedies_of(cfg)  # a bad remedy value: one line, before anything runs
    if alpha_lr is not None and alpha_lr_budget is not None:
        raise ConfigError("give --alpha-lr or --alpha-lr-budget, not both: one sets the lr, the other derives it")
    if alpha_lr is not None or alpha_lr_budget is not None:  # the one given replaces the preset's rule
        cfg = dataclasses.replace(cfg, a_lr=cfg.a_lr if alpha_lr is None else alpha_lr, a_lr_budget=alpha_lr_budget)
    options = RunOptions(resume=_resume(resume), overwrite=overwrite, checkpoint_every=checkpoint_every,
                         tensorboard=tensorboard)
    result = run_search(cfg, data, out, options, preset=preset, compile=compile)
    if is_main_process():
        typer.echo(result.genotype.describe())
        typer.echo(f"genotype: {out / 'genotype.json'}")


@app.command()
@remedy_options(at_derive=True)
def derive(
    run: Path = typer.Argument(..., help="Search run directory."),
    epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch whose alphas to use (default: last)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Genotype JSON to write (default: stdout)."),
    select: str = typer.Option(
        "alpha", "--select", help="alpha: the paper's rule (largest alphas; the run's derivation remedies apply, "
        "the flags below override them); perturbation: DARTS-PT (what the supernet needs most on training clips; "
        "last epoch only)."),
    videos: int = typer.Option(64, "--videos", help="--select perturbation: training clips to score on."),
    max_gflops: Optional[float] = typer.Option(
        None, "--max-gflops", help="The best genotype (largest alpha score, exact) whose retrained network costs at most "
        "this many GFLOPs per view (as pvnas flops; default: the run's --target-* budget, if any)."),
    max_params: Optional[float] = typer.Option(None, "--max-params", help="... at most this many parameters."),
    max_ms: Optional[float] = typer.Option(None, "--max-ms", help="... at most this many ms per the --latency table."),
    latency: Optional[Path] = typer.Option(None, "--latency", help="A `pvnas latency` table, for --max-ms."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="Retrain network the GFLOPs/params are counted on: L, M, tiny, demo (default: the "
        "search's own: demo/tiny for theirs, else L)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per clip of that count (preset default)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="Crop size in pixels of that count (preset default)."),
    num_classes: int = typer.Option(400, "--num-classes", help="Classes of that count (as pvnas flops)."),
    remedies: Optional[dict] = None,
) -> None:
    """Derive a genotype from the alphas of any saved epoch (paper Table 3 "stop at epoch"), or by perturbation;
    with --max-gflops/--max-params/--max-ms the best one within that budget."""
    from pvnas.runtime.rundir import load_yaml
    from pvnas.search.remedies import SELECTIONS, selection
    from pvnas.search.remedies.budget import budget_of
    from pvnas.search.snapshots import derive_from_run

    if select not in ("alpha", *SELECTIONS):
        raise ConfigError(f"--select must be one of alpha, {', '.join(SELECTIONS)}; got {select!r}")
    if videos < 1:
        raise ConfigError(f"--videos must be >= 1, got {videos}")
    if remedies and select != "alpha":
        flags = ", ".join("--" + name.replace("_", "-") for name in remedies)
        raise ConfigError(f"{flags}: the alpha derivation's setting, goes with --select alpha, not --select {select}")
    limits = (max_gflops, max_params, max_ms, latency, preset, frames, crop)
    if select != "alpha" and any(v is not None for v in limits):
        raise ConfigError(f"--max-gflops/--max-params/--max-ms go with --select alpha, not --select {select}")
    config_path = Path(run) / "config.yaml"
    search = (load_yaml(config_path).get("search") or {}) if config_path.exists() else {}
    budget = budget_of(search if isinstance(search, dict) else {}, max_gflops, max_params, max_ms, latency, preset,
                       frames, crop, num_classes)
    genotype = (derive_from_run(run, epoch, remedies, budget) if select == "alpha"
                else selection(select)(run, epoch, videos))
    if output is None:
        _print_json(genotype.to_dict())
    else:
        genotype.save(output)
        log.info("wrote %s (epoch %d)", output, genotype.meta["epoch"])


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


@app.command()
def train(
    genotype: Optional[Path] = typer.Option(
        None, "--genotype", help="Genotype JSON (from search, derive or random; default: the --init model's, else "
                                 "the --config file's)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset spec, e.g. synthetic, demo, ucf101:ROOT "
                                       "(required unless the --config file names one)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or continue with --resume)."),
    config: Optional[Path] = CONFIG_OPT,
    preset: Optional[str] = typer.Option(None, "--preset", help="L (default), M (paper), tiny, demo."),
    init: Optional[Path] = typer.Option(
        None, "--init", help="Start from a trained RUN/model.pt (transfer): matching tensors load, a new classifier "
                             "where the classes differ."),
    freeze: float = typer.Option(
        0.0, "--freeze", help="With --init: the share of the epochs that trains the classifier alone, stem and cells "
                              "fixed (linear probe), before fine-tuning everything (0.25: the first quarter)."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels C (preset default)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Normal cells K per stage (preset default)."),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="Epochs (default: the preset's, else the dataset's: 196, UCF-101/HMDB-51 128); warm-up scales."
    ),
    seed: Optional[int] = typer.Option(None, "--seed"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Clips per process and step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Base lr per process (paper 0.01), times the world size."),
    workers: Optional[int] = WORKERS_OPT,
    threads: Optional[int] = THREADS_OPT,
    resume: Optional[str] = RESUME_OPT,
    overwrite: bool = OVERWRITE_OPT,
    checkpoint_every: Optional[float] = CHECKPOINT_EVERY_OPT,
    tensorboard: bool = TENSORBOARD_OPT,
    frames: Optional[int] = FRAMES_OPT,
    crop: Optional[int] = CROP_OPT,
    scale: Optional[str] = SCALE_OPT,
    impl: Optional[str] = typer.Option(None, "--impl", help="Network forward: fast (default) or reference (Conv3d)."),
    compile: bool = COMPILE_OPT,
) -> None:
    """Retrain a genotype from scratch (paper §4.2), or from a trained model with --init; writes model.pt,
    metrics.jsonl, checkpoint.pt."""
    from pvnas.config import NETWORK_PRESETS, RunOptions, override, override_clip
    from pvnas.retrain.modelfile import init_genotype
    from pvnas.retrain.train import resolve_schedule, run_train
    from pvnas.space.genotype import Genotype

    file = _config_file(config, "train", ("network", "genotype"))
    if genotype is not None:
        geno = Genotype.load(genotype)
    elif init is not None:
        geno = init_genotype(init)
    elif "genotype" in file:
        geno = Genotype.from_dict(file["genotype"], f"--config {config}: genotype")
    else:
        raise ConfigError("give --genotype FILE (or --init MODEL.pt, or a --config file that holds a genotype)")
    base, preset = _from_file(NETWORK_PRESETS, preset, "L", file, "network", config)
    data = _required(data, file)
    compile = compile or bool(file.get("compile", False))
    cfg = override(
        base, channels=channels, repeats=repeats, seed=seed, batch_size=batch_size,
        lr=lr, workers=workers, threads=threads, clip=override_clip(base.clip, frames, crop, scale), impl=impl,
    )
    cfg = resolve_schedule(cfg, data, epochs)
    options = RunOptions(resume=_resume(resume), overwrite=overwrite, checkpoint_every=checkpoint_every,
                         tensorboard=tensorboard)
    result = run_train(geno, cfg, data, out, options, preset=preset, compile=compile, init=init, freeze=freeze)
    if is_main_process():
        _print_json(result)


@app.command("eval")
def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="RUN/model.pt written by `pvnas train`."),
    data: str = typer.Option(..., "--data", help="Dataset spec; its val split is scored."),
    views: Optional[str] = typer.Option(None, "--views", help="CLIPSxCROPS per video (default: the model's, 10x3)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Clips per forward pass (bounds memory)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Loader worker processes."),
    threads: Optional[int] = THREADS_OPT,
    compile: bool = COMPILE_OPT,
) -> None:
    """Multi-view test: one JSON object (top1, top5, videos, skipped, by_views); also RUN/eval_<data>.json."""
    from pvnas.retrain.evaluate import run_eval

    _print_json(run_eval(checkpoint, data, views=views, batch_size=batch_size, workers=workers, compile=compile,
                         threads=threads))


@app.command()
def predict(
    videos: list[Path] = typer.Argument(..., help="Video files."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="RUN/model.pt written by `pvnas train`."),
    views: str = typer.Option("1x1", "--views", help="CLIPSxCROPS averaged per video."),
    top: int = typer.Option(5, "--top", help="How many classes to list per video."),
    threads: Optional[int] = THREADS_OPT,
    compile: bool = COMPILE_OPT,
) -> None:
    """Top-5 labels with probabilities per video, as a JSON list; a broken video gets an "error" entry.

    Exit code 0 if at least one video was scored, 2 if none could be.
    """
    from pvnas.retrain.predict import predict_videos
    from pvnas.errors import DataError

    results = predict_videos(checkpoint, videos, views=views, top=top, compile=compile, threads=threads)
    _print_json(results)
    if all("error" in r for r in results):
        raise DataError(f"none of the {len(results)} videos could be read")


@app.command()
def flops(
    genotype: Optional[Path] = typer.Option(None, "--genotype", help="Genotype JSON (or give --checkpoint)."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="RUN/model.pt written by `pvnas train`: its network, clip and classes."),
    preset: Optional[str] = typer.Option(None, "--preset", help="With --genotype: L (default), M (paper), tiny, demo."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per clip (default: the preset's or model's)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="Crop size in pixels (default: the preset's or model's)."),
    size: Optional[int] = typer.Option(None, "--size", hidden=True),  # the old name of --crop
    data: Optional[str] = typer.Option(None, "--data", help="Dataset spec whose classes to count, e.g. folder:ROOT."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classes (default: from --data, else 400)."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels C (preset default)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Normal cells K per stage (preset default)."),
) -> None:
    """Parameters and GMACs (multiply-adds / 1e9 per view, the paper's "GFLOPs") of a retrain network, as JSON."""
    from pvnas.config import NETWORK_PRESETS, get_preset, override
    from pvnas.estimate.datasets import resolve_inputs
    from pvnas.metrics.flops import count_flops
    from pvnas.nn.network import network_from_config
    from pvnas.retrain.modelfile import load_model
    from pvnas.space.genotype import Genotype

    crop = _renamed(crop, size, "--crop", "--size")
    if (genotype is None) == (checkpoint is None):
        raise ConfigError("give --genotype FILE or --checkpoint RUN/model.pt (one of them)")
    for name, value in (("--frames", frames), ("--crop", crop)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if checkpoint is not None:
        given = [flag for flag, value in (("--preset", preset), ("--data", data), ("--num-classes", num_classes),
                                          ("--channels", channels), ("--repeats", repeats)) if value is not None]
        if given:
            raise ConfigError(f"--checkpoint counts the trained network as it is; {', '.join(given)} "
                              f"{'go' if len(given) > 1 else 'goes'} with --genotype")
        trained = load_model(checkpoint)
        model, clip, preset, classes = trained.model, trained.config.clip, trained.preset, len(trained.classes)
    else:
        preset = preset or "L"
        _, _, classes = resolve_inputs(data, 1, num_classes)
        cfg = override(get_preset(NETWORK_PRESETS, preset), channels=channels, repeats=repeats)
        model, clip = network_from_config(Genotype.load(genotype), cfg, classes), cfg.clip
    shape = [3, frames or clip.frames, crop or clip.crop, crop or clip.crop]
    _print_json({**count_flops(model, shape), "preset": preset, "input": shape, "num_classes": classes})


@app.command()
def pareto(
    run: Path = typer.Argument(..., help="Search run directory."),
    preset: str = typer.Option("L", "--preset", help="Retrain network: L, M (paper), tiny, demo."),
    metric: str = typer.Option("gflops", "--metric", help="Budget on gflops or params."),
    points: int = typer.Option(12, "--points", help="Budgets, evenly spaced from the cheapest network to the unconstrained one."),
    epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch whose alphas to use (default: last)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per clip (preset default, L/M: 8)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="Crop size in pixels (preset default, L/M: 224)."),
    num_classes: int = typer.Option(400, "--num-classes"),
    channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels C (preset default)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Normal cells K per stage (preset default)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for pareto.json/.md/.png (default: RUN)."),
) -> None:
    """The best genotype of one search at a sweep of budgets (exact), from the cheapest network to the unconstrained one."""
    from pvnas.viz.pareto import pareto_sweep, write_pareto

    _require_dir(run)
    cfg, frames, crop = _retrain_network(preset, channels, repeats, frames, crop, num_classes)
    for path in write_pareto(pareto_sweep(run, cfg, preset, num_classes, frames, crop, metric, points, epoch), out or run):
        typer.echo(str(path))


@app.command()
def latency(
    preset: str = typer.Option("L", "--preset", help="Retrain network: L, M (paper), tiny, demo."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (or cuda:N)."),
    batch: int = typer.Option(1, "--batch-size", help="Clips per forward."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed calls before each timing."),
    runs: int = typer.Option(5, "--runs", help="Timed calls per op and per whole network (the median is kept)."),
    check: int = typer.Option(5, "--check", help="Random genotypes whose whole network checks the table's sum."),
    clock: str = typer.Option("wall", "--clock", help="wall, or cpu: the thread's CPU time (--threads 1 on a CPU "
                              "shared with other work: the idle-core latency)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads on CPU (default: every core)."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per clip (preset default, L/M: 8)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="Crop size in pixels (preset default, L/M: 224)."),
    num_classes: int = typer.Option(400, "--num-classes"),
    channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels C (preset default)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Normal cells K per stage (preset default)."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Table JSON to write (default latency-PRESET-DEVICE-bBATCH.json)."),
) -> None:
    """Inference milliseconds of each (cell kind, edge, op) at its positions plus the fixed part, measured here and
    checked against whole networks; `derive --max-ms` reads the table."""
    import torch

    from pvnas.metrics.latency import CLOCKS, DTYPES, latency_table
    from pvnas.runtime.device import torch_threads

    cfg, frames, crop = _retrain_network(preset, channels, repeats, frames, crop, num_classes)
    for name, value in (("--batch-size", batch), ("--runs", runs), ("--check", check)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {warmup}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if clock not in CLOCKS:
        raise ConfigError(f"--clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device must be cpu or cuda[:N], got {device!r}") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cuda" and not torch.cuda.is_available()):
        raise ConfigError(f"--device {device}: not available here (cpu{', cuda' if torch.cuda.is_available() else ''})")
    output = output or Path(f"latency-{preset}-{dev.type}-b{batch}.json")
    with torch_threads(threads if threads is not None else 0):
        log.info("latency: timing every op at every position and %d whole networks, %d rounds", check + 3, runs)
        table = latency_table(cfg, num_classes, frames, crop, dev, batch, dtype, warmup, runs, check=check, clock=clock)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(table.to_dict(), indent=2) + "\n")
    meta = table.meta
    typer.echo(f"{meta['device_name']} ({meta['device']}), {meta['threads']} threads, {meta['dtype']}, batch {batch}, "
               f"{meta['clock']} clock, "
               f"input {'x'.join(map(str, meta['input']))}: fixed part {table.fixed:.2f} ms")
    typer.echo("| genotype | table ms | measured ms | table off by |\n|---:|---:|---:|---:|")
    for row in meta["check"]:
        typer.echo(f"| random {row['seed']} | {row['table_ms']:.2f} | {row['measured_ms']:.2f} | {row['error']:+.1%} |")
    typer.echo(str(output))


def _retrain_network(preset: str, channels: int | None, repeats: int | None, frames: int | None, crop: int | None,
                     num_classes: int) -> tuple:
    """A retrain preset (NetworkConfig) with the C/K overrides, and its clip's frames and crop unless given."""
    from pvnas.config import NETWORK_PRESETS, get_preset, override

    cfg = override(get_preset(NETWORK_PRESETS, preset), channels=channels, repeats=repeats)
    frames = cfg.clip.frames if frames is None else frames
    crop = cfg.clip.crop if crop is None else crop
    for name, value in (("--frames", frames), ("--crop", crop), ("--num-classes", num_classes)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    return cfg, frames, crop


@app.command()
def estimate(
    genotype: Optional[Path] = typer.Option(
        None, "--genotype", help="Cost retraining this genotype (else: cost the search)."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="Search preset: search (paper, default), tiny, demo; with --genotype: L (default), M, tiny, demo."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Clips per step (preset default)."),
    batch: Optional[int] = typer.Option(None, "--batch", hidden=True),  # the old name of --batch-size
    frames: Optional[int] = typer.Option(None, "--frames", help="Frames per clip (preset default)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="Crop size in pixels (preset default)."),
    size: Optional[int] = typer.Option(None, "--size", hidden=True),  # the old name of --crop
    channels: Optional[int] = typer.Option(None, "--channels", help="Initial channels C (preset default)."),
    partial_channels: Optional[int] = typer.Option(None, "--partial-channels", help="Search: PC-DARTS K (1: exact)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Retrain: normal cells K per stage (preset default)."),
    data: Optional[str] = typer.Option(
        None, "--data", help="Dataset spec whose videos and classes to count, e.g. folder:ROOT "
        "(kinetics/ssv2/ucf101: their official size if ROOT is not here)."),
    dataset_size: Optional[int] = typer.Option(None, "--dataset-size", help="Training videos (default: from --data, else 1000)."),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="Search epochs (preset default) or retrain epochs (default: the dataset's)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classes (default: from --data, else 400)."),
    steps: int = typer.Option(3, "--steps", help="At least this many timed steps (after the warm-up; more if time allows)."),
    threads: Optional[int] = THREADS_OPT,
    compile: bool = COMPILE_OPT,
) -> None:
    """Before a run: params, MACs, memory, measured step time here, projected search or retrain (+ 30-view test) time.

    Times the step as the run will run it (threads, workers, impl, dtype, compile: printed). Never runs a step
    that would not fit in memory: where the batch does not fit, the JSON says which does.
    """
    batch, size = _renamed(batch_size, batch, "--batch-size", "--batch"), _renamed(crop, size, "--crop", "--size")
    common = dict(batch=batch, frames=frames, size=size, channels=channels, data=data, dataset_size=dataset_size,
                  epochs=epochs, num_classes=num_classes, steps=steps, compile=compile, threads=threads)
    if genotype is None:
        from pvnas.estimate.search import estimate as estimate_search

        if repeats is not None:
            raise ConfigError("--repeats is a retrain setting: give --genotype to cost a retrain")
        _print_json(estimate_search(preset or "search", partial_channels=partial_channels, **common))
        return
    from pvnas.estimate.retrain import estimate_train
    from pvnas.space.genotype import Genotype

    if partial_channels is not None:
        raise ConfigError("--partial-channels is a search setting; the retrain network has no partial channels")
    _print_json(estimate_train(Genotype.load(genotype), preset or "L", repeats=repeats, **common))


class ExportFormat(str, Enum):
    torchscript = "torchscript"
    onnx = "onnx"


@app.command()
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="RUN/model.pt written by `pvnas train`."),
    fmt: ExportFormat = typer.Option(ExportFormat.torchscript, "--format", help="torchscript or onnx."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write (.pt / .onnx)."),
) -> None:
    """A deployable model: float clips (N, 3, T, H, W) -> logits; prints JSON with the parity check."""
    from pvnas.retrain.export import export_model

    _print_json(export_model(checkpoint, fmt.value, output))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory to create (must be empty)."),
    data: str = typer.Option("demo", "--data", help="Dataset spec (default: the generated demo videos)."),
    seed: int = typer.Option(0, "--seed"),
    quick: bool = typer.Option(False, "--quick", help="Smoke-test budget: seconds instead of minutes."),
) -> None:
    """search -> derive -> retrain searched and random -> eval both -> plots -> HTML report."""
    from pvnas.demo import run_demo, summary_lines
    from pvnas.space.genotype import Genotype

    summary = run_demo(out, data=data, quick=quick, seed=seed)
    for line in summary_lines(summary, Genotype.load(out / "genotype.json")):
        typer.echo(line)


@app.command("data")
def data_doctor(
    spec: str = typer.Argument(..., help="Dataset spec, e.g. ucf101:/data/ucf101?split=1 or folder:ROOT."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Threads that probe videos (--deep: processes)."),
    deep: bool = typer.Option(False, "--deep", help="Read every frame the way training and predict do."),
    timeout: float = typer.Option(60.0, "--timeout", help="--deep: seconds one file may take."),
    max_memory: float = typer.Option(2048.0, "--max-memory", help="--deep: MB one worker process may use."),
) -> None:
    """Check a dataset: classes, videos per split, unreadable files with reasons.

    Exit code 0 if usable, 1 if not (2: bad spec or option). With --deep, 3 when usable but some
    listed videos would be skipped, are missing or could not be checked within the limits.
    """
    from pvnas.data.doctor import check_dataset, format_report
    from pvnas.runtime.progress import progress

    report = check_dataset(
        spec, workers=workers, deep=deep, timeout=timeout, max_memory_mb=max_memory,
        progress=lambda it: progress(it, "reading" if deep else "probing"),
    )
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    if not report["usable"]:
        raise typer.Exit(1)
    if deep and not report["all_readable"]:
        raise typer.Exit(3)


@app.command()
def prepare(
    src: Path = typer.Argument(..., help="Dataset root to re-encode (any layout)."),
    dst: Path = typer.Argument(..., help="Output root; the same layout, so the same spec works on it."),
    short_side: int = typer.Option(128, "--short-side", help="Resize so the short side is this many pixels."),
    keyint: int = typer.Option(16, "--keyint", help="Keyframe interval (small = cheap seeking)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel encoder processes."),
) -> None:
    """Re-encode a dataset for fast seeking (short side, short keyframe interval); keeps the layout."""
    from pvnas.data.prepare import prepare_dataset

    if not src.is_dir():
        raise ConfigError(f"{src}: no such dataset directory")
    if short_side < 16 or keyint < 1:
        raise ConfigError(f"--short-side must be >= 16 and --keyint >= 1, got {short_side} and {keyint}")
    _print_json(prepare_dataset(src, dst, short_side=short_side, keyint=keyint, workers=workers))


@app.command()
def plot(run: Path = typer.Argument(..., help="Run directory (search, train or demo).")) -> None:
    """PNG figures: alpha evolution per cell kind, derived cells, curves, accuracy vs views."""
    from pvnas.viz.plots import plot_run

    _require_dir(run)
    made = plot_run(run) + [p for sub in sorted(run.iterdir()) if sub.is_dir() and sub.name != "plots"
                             for p in plot_run(sub)]
    if not made:
        raise ConfigError(f"{run}: nothing to plot (no alphas/, metrics.jsonl, genotype.json or eval_*.json)")
    for path in made:
        typer.echo(str(path))


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run directory (search, train or demo)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file (default RUN/report.html)."),
) -> None:
    """One self-contained HTML file: config, figures, genotype, params/GFLOPs, accuracy, skipped videos."""
    from pvnas.viz.report import build_report

    _require_dir(run)
    typer.echo(str(build_report(run, output)))


def _require_dir(path: Path) -> None:
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run directory")


def _normalise(argv: list[str]) -> list[str]:
    """What click cannot parse itself: ``--debug`` anywhere (taken out here), and ``--resume`` with or without a
    value (alone it is given the value "", which :func:`_resume` reads as plain --resume)."""
    global _debug
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if arg == "--debug":
            _debug = True
        elif arg == "--resume" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append("--resume=")
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    import traceback

    from pvnas.runtime.run import Preempted, RunFinished

    global _debug
    _debug = False
    try:
        code = app(args=_normalise(sys.argv[1:] if argv is None else list(argv)), standalone_mode=False)
    except Preempted as exc:
        typer.echo(f"preempted: {exc}", err=True)
        return exc.exit_code
    except RunFinished as exc:
        if is_main_process():
            typer.echo(f"finished: {exc}", err=True)
        return exc.exit_code
    except PvnasError as exc:
        if _debug:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:
        if _is_usage_error(exc):
            exc.show()  # type: ignore[attr-defined]
            return 2
        if "torch.distributed" in sys.modules and not _debug:
            from pvnas.runtime.distributed import collective_failure

            if collective_failure(exc):  # a rank died or stopped answering: the torchrun group is broken
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                typer.echo(f"error: lost a process of the group ({reason[:300]}); the last checkpoint is kept: rerun "
                           "the same command with --resume auto (torchrun --max-restarts does)", err=True)
                return 1
        raise
    return code if isinstance(code, int) else 0


def _is_usage_error(exc: Exception) -> bool:
    """A click usage error (bad option, missing argument). Matched by class name: typer < 0.17 raises
    ``click.ClickException``, later typers a vendored copy (``typer._click``) and no longer install click."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
