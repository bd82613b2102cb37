"""Why a retrain did not learn: a check on its own records, so it never fails silently.

"Did not learn" is statistical, not a tuned threshold: the last epoch's training accuracy is within three
standard errors of chance (1 / classes) for the number of clips it saw. The likely causes are then read
from the run itself: a network without any temporal op (it sees every frame on its own, so classes that
differ only by motion are out of its reach), a loss that never fell, or one that blew up.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from pvnas.space.genotype import Genotype

TEMPORAL = ("conv_3x3x3", "conv_3x1x1")


def temporal_ops(genotype: Genotype) -> int:
    """Edges with a temporal convolution over all cells: 0 means the network never mixes frames before the pool."""
    return sum(op in TEMPORAL for cell in genotype.cells.values() for op, _ in cell.edges)


def blind_to_motion(genotype: Genotype) -> str | None:
    """The warning for a genotype without temporal ops, or None."""
    if temporal_ops(genotype):
        return None
    return ("the genotype has no temporal op (conv_3x3x3 / conv_3x1x1) in any cell: the network sees every frame "
            "on its own and averages them, so it cannot tell classes that differ only by motion or its direction")


def diagnose(records: Sequence[Mapping[str, Any]], num_classes: int, genotype: Genotype) -> dict[str, Any]:
    """``{"learned": bool, "train_acc", "chance", "causes": [...]}`` from a run's per-epoch metrics records."""
    last = records[-1]
    chance = 1.0 / num_classes
    seen = max(1, int(last.get("seen") or 1))
    margin = 3.0 * math.sqrt(chance * (1.0 - chance) / seen)
    learned = last["acc"] > chance + margin
    out: dict[str, Any] = {"learned": learned, "train_acc": last["acc"], "chance": chance,
                           "chance_margin": margin, "causes": []}
    if learned:
        return out
    causes = out["causes"]
    if warning := blind_to_motion(genotype):
        causes.append(warning)
    losses = [r["loss"] for r in records]
    if not all(math.isfinite(x) for x in losses) or losses[-1] > 1.5 * math.log(num_classes):
        causes.append(f"the loss rose to {losses[-1]:.3g} (chance level {math.log(num_classes):.3g}): the learning "
                      "rate is too high for this network; lower --lr")
    elif losses[-1] > 0.98 * math.log(num_classes):
        causes.append(f"the loss stayed at chance level ({losses[-1]:.3g} vs ln {num_classes} = "
                      f"{math.log(num_classes):.3g}) over {len(records)} epochs: too few --epochs for this network, "
                      "or a learning rate too low (--lr)")
    if not causes:
        causes.append(f"the loss fell ({losses[0]:.3g} -> {losses[-1]:.3g}) but training accuracy stayed at chance: "
                      "train longer (--epochs)")
    return out


def check_epochs(epochs: int, warmup: int) -> tuple[int, ...]:
    """The epochs after which :func:`early_check` looks at a retrain: the end of the warm-up, then 1/8, 1/4, 1/2 and
    3/4 of the run (those after the warm-up and before the end), so a failing run says so while most of it is left
    (3/4: a run that starts to memorise only after a quarter of it)."""
    start = max(1, warmup)
    points = {start} | {math.ceil(epochs * f) for f in (1 / 8, 1 / 4, 1 / 2, 3 / 4)}
    return tuple(sorted(p for p in points if start <= p < epochs))


def at_chance(accuracy: float, num_classes: int, n: int, z: float = 3.0) -> bool:
    """Whether ``accuracy`` over ``n`` samples is within ``z`` binomial standard errors of chance (1 / classes)."""
    chance = 1.0 / num_classes
    return accuracy <= chance + z * math.sqrt(chance * (1.0 - chance) / max(1, n))


def early_check(records: Sequence[Mapping[str, Any]], num_classes: int, epochs: int) -> dict[str, Any] | None:
    """A failing retrain's signature in its records so far (one per epoch), or None if it looks healthy.

    Diverging: a non-finite loss or one above 1.5 ln(classes), which a network that learns nothing stays at.
    Not learning: from a quarter of the run on, training accuracy within three standard errors of chance and the
    loss at chance level (>= 0.98 ln(classes)). Memorising: from half of the run on, training accuracy at least
    halfway from chance to 1 while validation accuracy is within three standard errors of chance and below
    training's by more than three (a validation split too small to tell a learned network from chance says
    nothing). The retrains that failed in docs/RESULTS.md did this (training 0.70-0.87 at the end); the ones that
    learned had left chance on validation by then, except a late start, which creeps above chance on its training
    clips for many epochs (`order`: 0.17 -> 0.31 over 27 epochs) before both jump together. Each comes with what
    to try.
    """
    last = records[-1]
    ln_k = math.log(num_classes)
    losses = [r["loss"] for r in records]
    seen = [f"epoch {last['epoch']}/{epochs}: loss {last['loss']:.3g} (chance level ln {num_classes} = {ln_k:.3g}), "
            f"training accuracy {last['acc']:.3f} (chance {1 / num_classes:.3f})"]
    if "grad_norm" in last:
        seen.append(f"gradient norm {last['grad_norm']:.3g}")
    if not all(math.isfinite(x) for x in losses) or last["loss"] > 1.5 * ln_k:
        return {"epoch": last["epoch"], "kind": "diverging", "saw": "; ".join(seen),
                "try": "lower --lr (e.g. by 10x) or lengthen the warm-up: the updates are too large for this network"}
    if 4 * last["epoch"] >= epochs and last["loss"] >= 0.98 * ln_k and at_chance(last["acc"], num_classes, last["seen"]):
        return {"epoch": last["epoch"], "kind": "not learning", "saw": "; ".join(seen),
                "try": "check that the data's labels match its content (pvnas doctor); a network without temporal ops "
                       "cannot tell motions apart; a small network may not fit under dropout and drop-path (set the "
                       "network config's dropout and drop_path to 0); otherwise train longer (--epochs) or try another "
                       "--seed"}
    val, n_val = last.get("val_top1"), last.get("val_videos")
    chance = 1 / num_classes
    if (2 * last["epoch"] >= epochs and val is not None and n_val and at_chance(val, num_classes, n_val)
            and last["acc"] >= (1 + chance) / 2  # half of what lies above chance: more than a late start fits
            and last["acc"] - val > 3 * math.sqrt(chance * (1 - chance) / n_val)):  # a split this small could tell
        seen.append(f"validation top-1 {val:.3f} on {n_val} videos")
        return {"epoch": last["epoch"], "kind": "memorising", "saw": "; ".join(seen),
                "try": "less regularising noise (the network config's dropout and drop_path) or another --seed; check "
                       "that the val split holds the same classes as the train split (pvnas doctor)"}
    return None
