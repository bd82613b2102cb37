"""Whether data loading keeps up with the step: clips decoded per second by one loader worker, measured here
on the training split of ``--data`` (decode, sample, transform, as a worker does, on one thread)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from pvnas.config import ClipConfig
from pvnas.runtime.device import cpu_cores
from pvnas.errors import PvnasError

LOADING_SECONDS = 3.0  # how long clips are decoded for the measurement
MAX_CLIPS = 64


def clips_per_second_per_worker(data: str | None, clip: ClipConfig, seconds: float = LOADING_SECONDS) -> dict[str, Any]:
    """Training clips of ``data`` made per second in this process on one thread, as one loader worker makes them
    (``measured`` False, with the reason, where the data is not readable here)."""
    from pvnas.data import build_dataset
    from pvnas.data.loader import Skipped

    if not data:
        return {"measured": False, "reason": "no --data to decode"}
    try:
        dataset = build_dataset(data, "train", clip, views="train")
    except PvnasError as err:
        return {"measured": False, "reason": f"--data {data} is not readable here ({err})"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a worker's share: the loader workers run one torch thread each
    try:
        made = skipped = 0
        t0 = time.perf_counter()
        while made + skipped < min(MAX_CLIPS, len(dataset)) and time.perf_counter() - t0 < seconds:
            item = dataset[(made + skipped, made + skipped)]
            skipped += isinstance(item, Skipped)
            made += not isinstance(item, Skipped)
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return {"measured": made > 0, "clips_per_s_per_worker": made / elapsed if made else None, "clips_decoded": made,
            "skipped": skipped, **({} if made else {"reason": "no clip of the first ones could be read"})}


def loading_plan(per_worker: dict[str, Any], batch: int, step_seconds: float | None, workers: int) -> dict[str, Any]:
    """The clips per second a step at ``step_seconds`` needs, and the loader workers that takes at the measured
    rate; whether ``workers`` keep up, and the cores there are for them."""
    plan: dict[str, Any] = {**per_worker, "workers_configured": workers, "cpu_cores": cpu_cores()}
    if step_seconds is None or not per_worker.get("measured"):
        return plan
    needed = batch / step_seconds
    workers_needed = math.ceil(needed / per_worker["clips_per_s_per_worker"])
    return {**plan, "clips_per_s_needed": needed, "workers_needed": workers_needed,
            "keeps_up": max(workers, 1) * per_worker["clips_per_s_per_worker"] >= needed}


def with_loading(step_seconds: float, batch: int, per_worker: dict[str, Any], workers: int) -> tuple[float, str]:
    """A run's step with its data loading, and how: with no workers (``--workers 0``) the main process decodes
    each batch between steps, so that time adds up; workers decode beside the steps, which then wait only when
    the workers together are slower."""
    if not per_worker.get("measured"):
        return step_seconds, "the step alone (loading not measured)"
    loading = batch / per_worker["clips_per_s_per_worker"]
    if workers == 0:
        return step_seconds + loading, f"the step + {loading:.3g} s of loading in the main process (no workers)"
    if loading / workers > step_seconds:
        return loading / workers, f"loading-bound: {workers} workers make a batch in {loading / workers:.3g} s"
    return step_seconds, f"the step ({workers} workers keep up)"
