"""From one step's time to a whole run: the loaders drop the last partial batch of every epoch."""

from __future__ import annotations


def project_search(step_seconds: float, dataset_size: int, batch: int, epochs: int) -> dict[str, float | int]:
    """Search time: ``dataset_size // batch`` steps per epoch."""
    steps = max(1, dataset_size // batch)
    return {
        "steps_per_epoch": steps,
        "epoch_seconds": steps * step_seconds,
        "search_seconds": steps * epochs * step_seconds,
        "search_hours": steps * epochs * step_seconds / 3600,
    }


def project_train(step_seconds: float, dataset_size: int, batch: int, epochs: int,
                  val_seconds_per_epoch: float = 0.0) -> dict[str, float | int]:
    """Retrain time: the training steps plus the single-view validation after every epoch."""
    steps = max(1, dataset_size // batch)
    seconds = epochs * (steps * step_seconds + val_seconds_per_epoch)
    return {"steps_per_epoch": steps, "train_seconds": seconds, "train_hours": seconds / 3600}
