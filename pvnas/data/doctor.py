"""``pvnas data SPEC``: check a dataset before spending hours on it.

Lists classes and videos per split, opens every video (the decoder's demux pass plus one
decoded frame) and reports what cannot be read and why, with duration, frame-rate and
resolution summaries. ``usable`` says whether training could start: both splits list videos
and each has at least one readable one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pvnas.data import SPLITS, list_samples, parse_spec
from pvnas.data.decode import DecodeError, VideoInfo, get_decoder
from pvnas.errors import ConfigError, DataError


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}


def _check_split(
    kind: str, arg: str, options: dict[str, str], split: str, workers: int, progress: Callable[[Iterable], Iterable]
) -> tuple[list[str], dict[str, Any]]:
    try:
        samples, classes, source, _ = list_samples(kind, arg, options, split)
    except DataError as e:
        return [], {"error": str(e)}
    decoder = get_decoder(options.get("decoder", "pyav"))
    existing = [(p, label) for p, label in samples if os.path.isfile(p)]
    missing = [p for p, _ in samples if not os.path.isfile(p)]

    def probe(path: str) -> VideoInfo | DecodeError:
        try:
            return decoder.info(path)
        except DecodeError as e:
            return e

    with ThreadPoolExecutor(max_workers=workers) as pool:  # PyAV releases the GIL while demuxing
        results = list(progress(pool.map(probe, [p for p, _ in existing])))
    infos = [r for r in results if isinstance(r, VideoInfo)]
    per_class = [0] * len(classes)
    for (_, label), r in zip(existing, results):
        per_class[label] += isinstance(r, VideoInfo)
    report: dict[str, Any] = {
        "source": source,
        "videos": len(samples),
        "readable": len(infos),
        "unreadable": [{"path": r.path, "reason": r.reason} for r in results if isinstance(r, DecodeError)],
        "missing": missing,
        "readable_per_class": dict(zip(classes, per_class)),
    }
    if infos:
        report["duration_s"] = _summary([i.duration for i in infos])
        report["frames"] = _summary([i.num_frames for i in infos])
        report["fps"] = _summary([i.fps for i in infos])
        report["width"] = _summary([i.width for i in infos])
        report["height"] = _summary([i.height for i in infos])
    return classes, report


def check_dataset(
    spec: str, *, workers: int | None = None, progress: Callable[[Iterable], Iterable] | None = None
) -> dict:
    """Check every video of ``spec``; returns a JSON-ready report (see :func:`format_report`).

    Keys: ``spec``, ``classes``, ``splits`` (per split: ``videos`` listed, ``readable``,
    ``unreadable`` [{path, reason}], ``missing`` [path], ``readable_per_class``, and min/median/max
    of ``duration_s``, ``frames``, ``fps``, ``width``, ``height``; or ``error`` when the split
    cannot even be listed), ``problems`` (one line each) and ``usable``. ``progress`` wraps the
    per-video iteration (e.g. ``tqdm``). Bad specs raise :class:`~pvnas.errors.ConfigError`.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers (probing threads) must be >= 1, got {workers}")
    kind, arg, options = parse_spec(spec)
    report: dict[str, Any] = {"spec": spec, "classes": [], "splits": {}, "problems": []}
    if kind == "synthetic":
        from pvnas.data.synthetic import CLASSES

        report["classes"] = list(CLASSES)
        report["splits"] = {s: {"videos": "generated in memory", "readable": 1} for s in SPLITS}
        report["usable"] = True
        return report
    for split in SPLITS:
        classes, split_report = _check_split(
            kind, arg, options, split, workers or os.cpu_count() or 1, progress or (lambda it: it)
        )
        report["classes"] = report["classes"] or classes
        report["splits"][split] = split_report
        if "error" in split_report:
            report["problems"].append(f"{split}: {split_report['error']}")
        elif split_report["readable"] == 0:
            report["problems"].append(f"{split}: none of the {split_report['videos']} listed videos is readable")
        if split_report.get("missing"):
            hint = "" if options.get("missing") == "skip" else " (training refuses this; add ?missing=skip to leave them out)"
            report["problems"].append(f"{split}: {len(split_report['missing'])} listed videos are missing{hint}")
        if split_report.get("unreadable"):
            report["problems"].append(f"{split}: {len(split_report['unreadable'])} videos cannot be decoded")
    missing_ok = options.get("missing") == "skip" or not any(report["splits"][s].get("missing") for s in SPLITS)
    report["usable"] = missing_ok and all(report["splits"][s].get("readable", 0) > 0 for s in SPLITS)
    return report


def format_report(report: dict, max_listed: int = 20) -> str:
    """The report as text for a terminal: summary lines first, then the files that failed."""
    lines = [f"dataset {report['spec']}: {'usable' if report['usable'] else 'NOT usable'}"]
    classes = report["classes"]
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    lines.append(f"classes: {len(classes)} ({shown})")
    for split, r in report["splits"].items():
        if "error" in r:
            lines.append(f"{split}: error: {r['error']}")
            continue
        unreadable = r.get("unreadable", [])
        lines.append(
            f"{split}: {r['videos']} videos, {r['readable']} readable, {len(unreadable)} unreadable, "
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
        for item in unreadable[:max_listed]:
            lines.append(f"  unreadable {item['path']}: {item['reason']}")
        for path in r.get("missing", [])[:max_listed]:
            lines.append(f"  missing {path}")
        hidden = max(len(unreadable) - max_listed, 0) + max(len(r.get("missing", [])) - max_listed, 0)
        if hidden:
            lines.append(f"  ... and {hidden} more (see the JSON report)")
    return "\n".join(lines)
