"""``pvnas data SPEC``: check a dataset before spending hours on it.

Lists classes and videos per split, opens every video and reports what cannot be read and why,
with duration, frame-rate and resolution summaries, and the layout that was found. ``usable`` says whether
runs can start on it, by the rule the runs themselves apply (:func:`~pvnas.data.datasets.video.refusal`): each
split lists videos, none is missing (unless ``?missing=skip``) and at least one is readable; ``usable_for`` says
it per command (a search reads the training split only).

The default check opens each file (the decoder's demux pass plus one decoded frame): quick, but a
file damaged further in passes it and is then skipped mid-run. ``deep=True`` reads every frame of
every file through the decoder's own ``read``, the call training, eval and predict make, in
chunks that each start where a read can start (every keyframe it may seek to, every window it
may decode from the start), so every file a run would skip is named beforehand. It also decodes
each file straight through (:meth:`~pvnas.data.decode.PyAVDecoder.scan`) to name the files that
are damaged but still readable (frames missing against the header, concealed errors). Files are
checked in worker processes, each file under a time limit and each worker under a memory limit,
so that one absurd file costs a verdict, not the machine.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from pvnas.data import SPLITS, list_samples, parse_spec
from pvnas.data.datasets.video import check_labels, refusal
from pvnas.data.decode import DecodeError, Decoder, PyAVDecoder, get_decoder
from pvnas.errors import ConfigError

CHUNK_BYTES = 256 * 2**20  # RGB bytes one deep-check read may return: bounds a worker's memory per read


class _Sized:
    """An iterator with a known length, so that a progress bar shows a total."""

    def __init__(self, it: Iterable, n: int) -> None:
        self.it, self.n = it, n

    def __iter__(self) -> Iterator:
        return iter(self.it)

    def __len__(self) -> int:
        return self.n


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}


# -- one file --------------------------------------------------------------------------------------


def probe_file(path: str, decoder: Decoder) -> dict[str, Any]:
    """The quick verdict: the demux pass and the first frame (``info``)."""
    try:
        return {"status": "ok", "info": dataclasses.asdict(decoder.info(path))}
    except DecodeError as e:
        return {"status": "unreadable", "reason": e.reason}


def _damage(scan: dict[str, Any], duration: float) -> str | None:
    """Why a straight decode says the file is damaged, or None when it holds what it claims.

    ``duration`` is what the index found; a header without a frame count (Matroska) is held to
    its duration, with a margin for audio that outlasts the video.
    """
    notes = []
    if scan["header_frames"] > scan["packets"]:
        notes.append(f"the header claims {scan['header_frames']} frames, the file holds {scan['packets']}")
    elif not scan["header_frames"] and scan["header_seconds"] - duration > max(1.0, 0.05 * scan["header_seconds"]):
        notes.append(f"the header claims {scan['header_seconds']:.1f} s, the frames span {duration:.1f} s")
    if scan["decoded"] < scan["packets"]:
        notes.append(f"{scan['packets'] - scan['decoded']} of {scan['packets']} frames do not decode")
    if scan["corrupt"]:
        notes.append(f"{scan['corrupt']} frames decode with concealed errors")
    if scan["errors"] and not notes:
        notes.append(f"{scan['errors']} decoding errors ({scan['first_error']})")
    return "; ".join(notes) or None


def deep_check_file(path: str, decoder: Decoder, scanner: PyAVDecoder) -> dict[str, Any]:
    """The deep verdict on one file: ``unreadable`` (a read fails: runs would skip it), ``damaged``
    (every read works, but the straight decode finds damage) or ``ok``.

    Reads cover every frame in chunks of at most :data:`CHUNK_BYTES`; a chunk plans its own
    seeks, so each keyframe is a seek target of some chunk and a file without seekable keyframes
    is decoded from the start as a training read would.
    """
    quick = probe_file(path, decoder)
    if quick["status"] != "ok":
        return quick
    info = quick["info"]
    try:
        scan = dataclasses.asdict(scanner.scan(path))
        frames = {k: scan[k] for k in ("header_frames", "header_seconds", "packets", "decoded")}
    except DecodeError as e:
        scan, frames = None, {"scan": e.reason}
    n = info["num_frames"]
    chunk = max(1, CHUNK_BYTES // (info["width"] * info["height"] * 3))
    for start in range(0, n, chunk):
        try:
            decoder.read(path, range(start, min(n, start + chunk)))
        except DecodeError as e:
            return {"status": "unreadable", "reason": e.reason, "frames": frames, "info": info}
    damage = _damage(scan, info["duration"]) if scan else frames["scan"]
    return {"status": "damaged" if damage else "ok", "reason": damage, "frames": frames, "info": info}


# -- worker processes ------------------------------------------------------------------------------


def _serve(conn: Connection, decoder_name: str) -> None:
    """A deep-check worker: paths in, verdicts out, until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    decoder = get_decoder(decoder_name, threads=1)  # one thread per worker, as in a loader worker
    scanner = decoder if isinstance(decoder, PyAVDecoder) else PyAVDecoder(threads=1)
    while (path := conn.recv()) is not None:
        try:
            verdict = deep_check_file(path, decoder, scanner)
        except Exception as e:  # a decoder bug: it would stop a training run, so name it (no traceback)
            verdict = {"status": "unchecked", "reason": f"the decoder raised {type(e).__name__}: {e} (a pvnas bug)"}
        conn.send(verdict)


def _peak_rss_mb(pid: int) -> float:
    """The highest resident memory a process has had (VmHWM): catches spikes between two looks."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0


class _Worker:
    """One worker process and the file it is checking (forked from a clean forkserver)."""

    def __init__(self, ctx: mp.context.BaseContext, decoder_name: str) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, decoder_name), daemon=True)
        self.proc.start()
        child.close()
        self.path: str | None = None
        self.deadline = 0.0

    def give(self, path: str, timeout: float) -> None:
        self.path, self.deadline = path, time.monotonic() + timeout
        self.conn.send(path)

    def stop(self, kill: bool) -> None:
        """End the process (politely when idle) and reap it."""
        if not kill:
            try:
                self.conn.send(None)
                self.proc.join(5)
            except OSError:
                pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def deep_check_files(
    paths: list[str], decoder_name: str, *, workers: int, timeout: float, max_memory_mb: float
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, verdict)`` for each path, in completion order, from ``workers`` processes.

    A file whose verdict takes longer than ``timeout`` seconds, that makes its worker's resident
    memory peak over ``max_memory_mb`` MB, or that kills its worker gets an ``unchecked`` verdict
    saying which, and a fresh worker (a worker that over-ran is killed on the spot).
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # workers fork with the decoder already imported
    todo = deque(paths)
    pool: list[_Worker] = []

    def over_limit(worker: _Worker) -> str | None:
        if time.monotonic() > worker.deadline:
            return f"no verdict within {timeout:g} s (--timeout)"
        if _peak_rss_mb(worker.proc.pid) > max_memory_mb:  # type: ignore[arg-type]
            return f"decoding it took more than {max_memory_mb:g} MB of memory (--max-memory)"
        return None

    try:
        pool = [_Worker(ctx, decoder_name) for _ in range(min(workers, len(paths)))]
        while todo or any(w.path is not None for w in pool):
            for worker in pool:
                if worker.path is None and todo:
                    worker.give(todo.popleft(), timeout)
            busy = [w for w in pool if w.path is not None]
            ready = wait([w.conn for w in busy], timeout=0.1)
            done: list[tuple[_Worker, dict[str, Any]]] = []
            for worker in busy:
                reason = over_limit(worker)  # a verdict that came in counts only within the limits too
                if reason is None and worker.conn in ready:
                    try:
                        done.append((worker, worker.conn.recv()))
                        continue
                    except (EOFError, OSError):
                        worker.proc.join(5)
                        code = worker.proc.exitcode
                        died = f"signal {-code}" if code and code < 0 else f"exit code {code}"
                        reason = f"the decoder process died ({died})"
                if reason is not None:
                    done.append((worker, {"status": "unchecked", "reason": reason}))
            for worker, verdict in done:
                path, worker.path = worker.path, None
                if verdict["status"] == "unchecked":
                    worker.stop(kill=True)
                    pool[pool.index(worker)] = _Worker(ctx, decoder_name)
                yield path, verdict  # type: ignore[misc]
    finally:
        for worker in pool:
            worker.stop(kill=worker.path is not None)


# -- the dataset -----------------------------------------------------------------------------------


def _split_report(
    samples: list[tuple[str, int]], classes: list[str], source: str, verdicts: dict[str, dict[str, Any]], deep: bool
) -> dict[str, Any]:
    existing = [(p, label) for p, label in samples if os.path.isfile(p)]
    readable = [(p, label) for p, label in existing if verdicts[p]["status"] in ("ok", "damaged")]
    per_class = [0] * len(classes)
    for _, label in readable:
        per_class[label] += 1

    def listed(status: str) -> list[dict[str, Any]]:
        keys = ("reason", "frames") if deep else ("reason",)
        return [{"path": p, **{k: verdicts[p][k] for k in keys if k in verdicts[p]}}
                for p, _ in existing if verdicts[p]["status"] == status]

    report: dict[str, Any] = {
        "source": source,
        "videos": len(samples),
        "readable": len(readable),
        "unreadable": listed("unreadable"),
        "missing": [p for p, _ in samples if not os.path.isfile(p)],
        "readable_per_class": dict(zip(classes, per_class)),
    }
    if deep:
        report["damaged"] = listed("damaged")
        report["unchecked"] = listed("unchecked")
    infos = [verdicts[p]["info"] for p, _ in readable]
    if infos:
        report["duration_s"] = _summary([i["duration"] for i in infos])
        report["frames"] = _summary([i["num_frames"] for i in infos])
        report["fps"] = _summary([i["fps"] for i in infos])
        report["width"] = _summary([i["width"] for i in infos])
        report["height"] = _summary([i["height"] for i in infos])
    return report


def check_dataset(
    spec: str,
    *,
    workers: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    deep: bool = False,
    timeout: float = 60.0,
    max_memory_mb: float = 2048.0,
) -> dict:
    """Check every video of ``spec``; returns a JSON-ready report (see :func:`format_report`).

    Keys: ``spec``, ``deep``, ``layout`` (the layout found, in words), ``classes``, ``splits`` (per split:
    ``source``, ``videos`` listed, ``readable``, ``unreadable`` [{path, reason}], ``missing`` [path],
    ``readable_per_class``, and min/median/max of ``duration_s``, ``frames``, ``fps``, ``width``, ``height``),
    ``problems`` (one line each), ``usable_for`` (``search``: the training split passes; ``train`` and ``eval``:
    the validation split too) and ``usable`` (all of them). A split passes when
    :func:`~pvnas.data.datasets.video.refusal`, the rule runs apply, finds nothing. ``progress`` wraps the
    per-video iteration (e.g. ``tqdm``). Bad specs, and datasets whose manifests cannot be listed (no known
    layout, a missing ROOT, a malformed line), raise: the one line a run would stop with.

    ``deep``: ``unreadable`` are the files training, eval and predict would skip (with
    ``frames``: the header's count, the packets, the frames a straight decode gives), and each
    split adds ``damaged`` (readable, but frames missing or concealed errors) and ``unchecked``
    (no verdict within ``timeout`` seconds or ``max_memory_mb`` MB per worker process);
    ``all_readable`` says whether every listed video exists and passed.
    """
    _check_limits(workers, deep, timeout, max_memory_mb)
    kind, arg, options = parse_spec(spec)
    report: dict[str, Any] = {"spec": spec, "deep": deep, "layout": "", "classes": [], "splits": {}, "problems": []}
    if kind == "synthetic":
        return {**report, **_generated_in_memory(deep)}
    listed = {split: list_samples(kind, arg, options, split) for split in SPLITS}
    paths = sorted({p for entry in listed.values() for p, _ in entry.samples if os.path.isfile(p)})
    verdicts = _verdicts(paths, options.get("decoder", "pyav"), deep, workers, timeout, max_memory_mb, progress)
    refusals = {}
    for split in SPLITS:
        entry = listed[split]
        check_labels(entry.source, entry.samples, entry.classes)
        report["classes"] = report["classes"] or entry.classes
        report["layout"] = report["layout"] or entry.layout
        r = report["splits"][split] = _split_report(entry.samples, entry.classes, entry.source, verdicts, deep)
        refusals[split] = refusal(entry.source, r["videos"], r["missing"], r["readable"],
                                  options.get("missing") == "skip")
        report["problems"] += _split_problems(split, r, refusals[split], deep)
    report.update(_verdict(report["splits"], refusals, deep))
    return report


def _check_limits(workers: int | None, deep: bool, timeout: float, max_memory_mb: float) -> None:
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers (probing {'processes' if deep else 'threads'}) must be >= 1, got {workers}")
    if timeout <= 0 or max_memory_mb <= 0:
        raise ConfigError(f"--timeout and --max-memory must be > 0, got {timeout:g} s and {max_memory_mb:g} MB")


def _generated_in_memory(deep: bool) -> dict[str, Any]:
    """``synthetic``: nothing on disk to check; its clips are rendered on demand."""
    from pvnas.data.generators.moving_patterns import CLASSES

    splits = {s: {"videos": "generated in memory", "readable": 1} for s in SPLITS}
    return {"layout": "generated in memory", "classes": list(CLASSES), "splits": splits,
            "usable_for": {"search": True, "train": True, "eval": True}, "usable": True,
            **({"all_readable": True} if deep else {})}


def _verdicts(
    paths: list[str], decoder_name: str, deep: bool, workers: int | None, timeout: float, max_memory_mb: float,
    progress: Callable[[Iterable], Iterable] | None,
) -> dict[str, dict[str, Any]]:
    """Per existing file, what opening it (or, ``deep``, reading every frame in a worker process) found."""
    wrap = progress or (lambda it: it)
    if deep:
        found = deep_check_files(paths, decoder_name, workers=workers or os.cpu_count() or 1, timeout=timeout,
                                 max_memory_mb=max_memory_mb)
        return dict(wrap(_Sized(found, len(paths))))
    decoder = get_decoder(decoder_name)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:  # PyAV releases the GIL
        probed = pool.map(lambda p: probe_file(p, decoder), paths)
        return dict(zip(paths, wrap(_Sized(probed, len(paths)))))


def _split_problems(split: str, r: dict[str, Any], refused: str | None, deep: bool) -> list[str]:
    """One line per problem of a split's report; what makes runs refuse the split comes first."""
    problems = [f"{split}: {refused} (runs refuse this split)"] if refused else []
    if r["missing"] and not refused:
        problems.append(f"{split}: {len(r['missing'])} listed videos are missing (left out: ?missing=skip)")
    if r["unreadable"]:
        what = "would be skipped by training, eval and predict" if deep else "cannot be decoded"
        problems.append(f"{split}: {len(r['unreadable'])} videos {what}")
    if r.get("unchecked"):
        problems.append(f"{split}: {len(r['unchecked'])} videos could not be checked within the time or memory limit")
    if r.get("damaged"):
        problems.append(f"{split}: {len(r['damaged'])} videos are damaged but readable")
    return problems


def _verdict(splits: dict[str, dict[str, Any]], refusals: dict[str, str | None], deep: bool) -> dict[str, Any]:
    """``usable_for`` each command (search reads the training split only; train and eval the validation split
    too), ``usable`` when every command can run; ``deep``: ``all_readable`` too."""
    ok = {split: refusals[split] is None for split in SPLITS}
    usable_for = {"search": ok["train"], "train": ok["train"] and ok["val"], "eval": ok["val"]}
    out: dict[str, Any] = {"usable_for": usable_for, "usable": all(usable_for.values())}
    if deep:
        out["all_readable"] = all(not (splits[s]["unreadable"] or splits[s]["unchecked"] or splits[s]["missing"])
                                  for s in SPLITS)
    return out


def format_report(report: dict, max_listed: int = 20) -> str:
    """The report as text for a terminal: summary lines first, then the files that failed."""
    verdict = "usable"
    if not report["usable"]:
        able = [cmd for cmd, ok in report.get("usable_for", {}).items() if ok]
        verdict = "NOT usable" + (f" (only by {', '.join(able)}: it reads the training split alone)" if able else "")
    lines = [f"dataset {report['spec']}: {verdict}"]
    if report.get("layout"):
        lines.append(f"layout: {report['layout']}")
    lines += [f"problem: {p}" for p in report["problems"] if "runs refuse" in p]
    classes = report["classes"]
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    lines.append(f"classes: {len(classes)} ({shown})")
    for split, r in report["splits"].items():
        unreadable = r.get("unreadable", [])
        deep = "damaged" in r
        extra = f", {len(r['damaged'])} damaged but readable, {len(r['unchecked'])} unchecked" if deep else ""
        lines.append(
            f"{split}: {r['videos']} videos, {r['readable']} readable, {len(unreadable)} unreadable{extra}, "
            f"{len(r.get('missing', []))} missing"
        )
        if "duration_s" in r:
            d, f, w, h = r["duration_s"], r["fps"], r["width"], r["height"]
            lines.append(
                f"  duration {d['min']:.1f}-{d['max']:.1f} s (median {d['median']:.1f}), "
                f"fps {f['min']:.3g}-{f['max']:.3g}, "
                f"size {w['min']:.0f}x{h['min']:.0f} to {w['max']:.0f}x{h['max']:.0f}"
            )
        empty = [c for c, n in r.get("readable_per_class", {}).items() if n == 0]
        if empty:
            lines.append(f"  classes without a readable video: {', '.join(empty[:max_listed])}")
        groups = [("unreadable", unreadable), ("unchecked", r.get("unchecked", [])), ("damaged", r.get("damaged", []))]
        hidden = 0
        for label, items in groups:
            for item in items[:max_listed]:
                lines.append(f"  {label} {item['path']}: {item['reason']}")
            hidden += max(len(items) - max_listed, 0)
        for path in r.get("missing", [])[:max_listed]:
            lines.append(f"  missing {path}")
        hidden += max(len(r.get("missing", [])) - max_listed, 0)
        if hidden:
            lines.append(f"  ... and {hidden} more (see the JSON report)")
    return "\n".join(lines)
