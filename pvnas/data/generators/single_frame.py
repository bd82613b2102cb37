"""Does a single frame tell the class? A small 2D CNN with position channels, trained on single frames.

A task whose classes are defined by motion or order is only a test of temporal modelling if no single frame
gives the class away (a zoom-in frame that is mostly magnified, a texture whose grain shows the axis of a
shift, an object whose position depends on where its path had to fit). This check trains a small
convolutional classifier on single frames, with the pixel coordinates as two extra input channels so that
position is visible to it, and tests it on held-out frames, one per clip (independent samples). The verdict
is statistical: the accuracy must stay within ``z`` binomial standard errors of the chance level the task
claims (1 / classes where a frame tells nothing).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FrameCheck:
    """A single-frame classifier's held-out accuracy against a chance level, with its binomial standard error."""

    accuracy: float
    chance: float
    n_test: int
    train_accuracy: float

    @property
    def se(self) -> float:
        """The binomial standard error of the accuracy under chance, for ``n_test`` independent frames."""
        return math.sqrt(self.chance * (1 - self.chance) / self.n_test)

    @property
    def z(self) -> float:
        """How many standard errors above chance the accuracy is."""
        return (self.accuracy - self.chance) / self.se

    def at_chance(self, z: float = 2.0) -> bool:
        return self.accuracy <= self.chance + z * self.se

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "se": self.se, "z": self.z}


class FrameNet(nn.Module):
    """Three strided 3x3 convolutions over RGB, the pixel coordinates (where), the frame's time in the clip (when)
    and their products, then a linear layer over the flattened map: it can learn "the object is near the left
    edge in the first frame"."""

    def __init__(self, num_classes: int, size: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 8
        for _ in range(3):
            layers += [nn.Conv2d(c_in, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            c_in = width
        self.features = nn.Sequential(*layers)
        side = size
        for _ in range(3):
            side = (side + 1) // 2
        self.head = nn.Linear(3 * width * side * side, num_classes)
        lin = torch.linspace(-1, 1, size)
        self.register_buffer("coords", torch.stack(torch.meshgrid(lin, lin, indexing="ij"))[None], persistent=False)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        t = time.view(n, 1, 1, 1)
        coords = self.coords.expand(n, -1, -1, -1)
        x = torch.cat([x, coords, t.expand(n, 1, h, w), coords * t], 1)  # where, when, and where x when
        f = self.features(x).flatten(1)
        f = torch.cat([f, f * t.view(n, 1), f * t.view(n, 1) ** 2], 1)  # what is where, as a function of when
        return self.head(F.dropout(f, 0.5, self.training))


@dataclass(frozen=True)
class Frames:
    """Single frames with their time in their clip (0 first, 1 last) and their clip's label."""

    pixels: torch.Tensor  # float (N, 3, H, W) in [0, 1]
    times: torch.Tensor  # float (N,)
    labels: torch.Tensor  # long (N,)

    @classmethod
    def of_clips(cls, clips: Sequence[np.ndarray | torch.Tensor], labels: Sequence[int], rng: np.random.Generator,
                 per_clip: int | None = None) -> Frames:
        """``per_clip`` distinct frames drawn at random from each uint8 ``(T, H, W, 3)`` clip (None: all of them)."""
        pixels, times, out = [], [], []
        for clip, label in zip(clips, labels):
            n = len(clip)
            idx = np.arange(n) if per_clip is None else np.sort(rng.choice(n, per_clip, replace=False))
            pixels.append(torch.as_tensor(np.asarray(clip)[idx]))
            times += (idx / max(n - 1, 1)).tolist()
            out += [label] * len(idx)
        x = torch.cat(pixels).permute(0, 3, 1, 2).float() / 255.0
        return cls(x, torch.tensor(times, dtype=torch.float32), torch.tensor(out, dtype=torch.long))


def single_frame_check(train: Frames, test: Frames, num_classes: int, *, chance: float | None = None,
                       epochs: int = 15, batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> FrameCheck:
    """Train :class:`FrameNet` on ``train`` and test it on ``test``, whose frames must come from distinct clips
    (the standard error assumes independent test frames). ``chance`` defaults to 1 / ``num_classes`` (a balanced
    test set). Runs on one torch thread (a network this small gains nothing from more; on a busy machine a second
    thread stalls every step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_and_test(train, test, num_classes, chance, epochs, batch_size, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_and_test(train: Frames, test: Frames, num_classes: int, chance: float | None, epochs: int, batch_size: int,
                  lr: float, seed: int) -> FrameCheck:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean = train.pixels.mean((0, 2, 3), keepdim=True)
    std = train.pixels.std((0, 2, 3), keepdim=True) + 1e-6
    x, xt = (train.pixels - mean) / std, (test.pixels - mean) / std
    tx, tt = 2 * train.times - 1, 2 * test.times - 1
    model = FrameNet(num_classes, x.shape[-1])
    steps = epochs * math.ceil(len(x) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    model.train()
    correct = seen = 0
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            logits = model(x[idx], tx[idx])
            loss = F.cross_entropy(logits, train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if epoch == epochs - 1:
                correct += int((logits.argmax(1) == train.labels[idx]).sum())
                seen += len(idx)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i : i + 256], tt[i : i + 256]).argmax(1) for i in range(0, len(xt), 256)])
    return FrameCheck(float((pred == test.labels).float().mean()),
                      chance if chance is not None else 1 / num_classes, len(test.labels), correct / max(seen, 1))
