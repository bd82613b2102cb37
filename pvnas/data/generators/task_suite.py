"""The task suite: generated video classification tasks of different kinds, to judge a search on data it
was not tuned on (``--data task:NAME``).

Each task renders deterministic clips from a seed and says what it demands of a network: which cells'
convolutions it needs (``needs``) and why: noise, clutter and small objects make them hard. Each training split
is as large as retrains of the ``demo`` network needed to learn the task on the genotypes and seeds measured,
and each task's retrain (``retrain_epochs``) as long as a late start needs. With fewer clips, learning is a
phase change: below it the clips are memorised and the retrain ends at chance, near it some seeds learn and
others do not (docs/RESULTS.md), and then the noise of a retrain, not the architecture, decides a comparison.
``order`` and ``fine_motion`` (their ``version`` 4) doubled their splits when a genotype memorised one seed;
their studies search on the old split (``search_per_class``): half the cost, and ``order``'s searches won 4 of
5 seeds on it.

| task | a class is | a single frame tells | needs |
|---|---|---|---|
| ``motion`` | one of 8 slow motions of a noisy random texture (the ``demo`` generator, harder) | nothing | temporal convs |
| ``appearance`` | one of 8 small shapes drifting at random over clutter | the class | spatial convs |
| ``appearance_motion`` | shape (3) x direction (3) of one object | half of it | spatial and temporal convs |
| ``order`` | the order of the two directions (of 3) an object moves in, turning mid-clip (6 ordered pairs) | nothing | temporal convs over the whole clip |
| ``fine_motion`` | the direction (4) of one small dot moving steadily among look-alike dots that jitter and flicker | nothing | spatial and temporal convs at full resolution |

Clips are never flipped (several tasks name left and right). Every clip lasts exactly the presets' window (16 frames at 15 fps, ``demo``/``tiny`` clip settings), so the
network always sees the whole clip. Renderers are pure functions of ``(label, rng)``: float ``(T, S, S, 3)``
in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pvnas.data.generators.moving_patterns import CLASSES as MOTIONS
from pvnas.data.generators.moving_patterns import moving_pattern_clip

FRAMES, SIZE, FPS = 16, 40, 15.0  # a clip is the demo preset's window: 16 frames at 15 fps
EVAL_STD = 0.02  # validation splits hold enough clips for a binomial std of top-1 of at most 2 points (625)
RETRAIN_EPOCHS = 30  # a study's retrain of a task (and of other data): where the `demo` recipe's accuracy levels off
SHAPES = ("disk", "square", "triangle", "cross", "ring", "diamond", "hbar", "vbar")

Renderer = Callable[[int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Task:
    """One generated task: its classes, what it demands of a network, its size and its renderer."""

    name: str
    classes: tuple[str, ...]
    demands: str  # what a network must do to solve it, in a sentence
    needs: tuple[str, ...]  # cell kinds whose convolutions the task needs (the collapse check of the study)
    single_frame: str  # what one frame tells of the class: "nothing" (checked in tests), "the class", "the shape"
    render: Renderer
    train_per_class: int
    val_per_class: int = 0  # 0: enough for an evaluation noise of at most EVAL_STD (see __post_init__)
    hidden: tuple[int, ...] | None = None  # per class, the part of it no single frame tells (with "the shape")
    retrain_epochs: int = RETRAIN_EPOCHS  # how long the studies retrain on it: long enough for a late start to finish
    search_per_class: int = 0  # the studies search on this many training clips per class (0: all of them)
    version: int = 3  # the suite version in which its clips or split last changed: names its cache folders

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"task {self.name}: version must be >= 1, got {self.version}")
        if self.search_per_class < 0:
            raise ValueError(f"task {self.name}: search_per_class must be >= 0, got {self.search_per_class}")
        if self.retrain_epochs < 1:
            raise ValueError(f"task {self.name}: retrain_epochs must be >= 1, got {self.retrain_epochs}")
        if not self.val_per_class:  # the binomial std sqrt(p (1 - p) / n) is largest at p = 0.5
            object.__setattr__(self, "val_per_class", math.ceil(0.25 / EVAL_STD**2 / len(self.classes)))

    @property
    def frame_blind(self) -> tuple[int, ...] | None:
        """Per class, the label of what no single frame may tell: the class itself where a frame tells "nothing",
        a part of it (``hidden``) where it tells the rest, None where a frame tells the class."""
        return tuple(range(len(self.classes))) if self.single_frame == "nothing" else self.hidden

    @property
    def train_size(self) -> int:
        return len(self.classes) * self.train_per_class

    @property
    def val_size(self) -> int:
        return len(self.classes) * self.val_per_class


def _grid(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)`` of a ``size`` x ``size`` frame."""
    lin = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(lin, lin, indexing="ij")


def _texture(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random colour texture ``(size, size, 3)`` in [0, 1]: ``cells`` x ``cells`` noise, upsampled."""
    coarse = torch.from_numpy(rng.random((1, 3, cells, cells), dtype=np.float32))
    tex = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    lo, hi = tex.amin(), tex.amax()
    return ((tex - lo) / (hi - lo + 1e-6)).numpy()


def shape_mask(shape: str, cy: float, cx: float, r: float, size: int = SIZE) -> np.ndarray:
    """Boolean ``(size, size)`` mask of one of :data:`SHAPES` centred at (cy, cx) with radius ``r`` (pixels)."""
    yy, xx = _grid(size)
    dy, dx = yy - cy, xx - cx
    ady, adx = np.abs(dy), np.abs(dx)
    thin = max(1.0, r / 3)
    if shape == "disk":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return np.maximum(ady, adx) <= r * 0.8
    if shape == "triangle":  # apex up
        return (dy <= r * 0.8) & (dy >= -r) & (adx <= (dy + r) * 0.55)
    if shape == "cross":
        return ((ady <= thin) & (adx <= r)) | ((adx <= thin) & (ady <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (r - 1.6 * thin) ** 2)
    if shape == "diamond":
        return ady + adx <= r
    if shape == "hbar":
        return (ady <= thin) & (adx <= r)
    if shape == "vbar":
        return (adx <= thin) & (ady <= r)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _colour(rng: np.random.Generator, away_from: np.ndarray | None = None) -> np.ndarray:
    """A random saturated colour, at least 0.5 (L2, RGB) from ``away_from`` if given."""
    while True:
        c = rng.random(3).astype(np.float32)
        c = (c - c.min()) / (c.max() - c.min() + 1e-6)  # full saturation range
        if away_from is None or np.linalg.norm(c - away_from) >= 0.5:
            return c


def _finish(video: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Per-pixel Gaussian noise of std ``noise`` and a per-frame brightness flicker, clipped to [0, 1]."""
    video = video + rng.normal(0.0, noise, video.shape).astype(np.float32)
    video = video * rng.uniform(0.85, 1.15, (video.shape[0], 1, 1, 1)).astype(np.float32)
    return np.clip(video, 0.0, 1.0)


def _paint(frame: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    frame[mask] = colour


def _blobs(rng: np.random.Generator, count: int = 3) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Distractor blobs: (centre, radius, colour) each."""
    return [(rng.uniform(3, SIZE - 3, 2), rng.uniform(1.5, 3.0), _colour(rng)) for _ in range(count)]


def _wrapped_mask(shape: str, centre: np.ndarray, r: float) -> np.ndarray:
    """:func:`shape_mask` on a torus: a shape centred near an edge shows its other part at the opposite edge."""
    cy, cx = np.mod(centre, SIZE)
    mask = np.zeros((SIZE, SIZE), bool)
    for dy in (-SIZE, 0, SIZE):
        for dx in (-SIZE, 0, SIZE):
            if -r - 1 <= cy + dy <= SIZE + r + 1 and -r - 1 <= cx + dx <= SIZE + r + 1:
                mask |= shape_mask(shape, cy + dy, cx + dx, r)
    return mask


def _moving_shape(background: np.ndarray, blobs: list, shape: str, centres: list[np.ndarray], r: float,
                  colour: np.ndarray) -> np.ndarray:
    """Frames of ``shape`` (radius ``r``, ``colour``) at ``centres[t]`` over ``background`` and static ``blobs``.

    The frame is a torus: a centre outside it wraps around, so a path may start anywhere. A task whose classes
    are directions draws its start uniformly over the frame: then where the object is in any one frame is
    independent of the class (a path chosen to fit inside the frame would start on the side it moves away from).
    """
    yy, xx = _grid()
    video = np.empty((FRAMES, SIZE, SIZE, 3), np.float32)
    for t, p in enumerate(centres):
        frame = background.copy()
        for centre, radius, c in blobs:
            _paint(frame, (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2, c)
        _paint(frame, _wrapped_mask(shape, p, r), colour)
        video[t] = frame
    return video


def render_motion(label: int, rng: np.random.Generator) -> np.ndarray:
    """The ``demo`` motions at a third of its speed (0.15-0.35 of the frame over the clip), on low-contrast
    textures, with noise and flicker."""
    seed = int(rng.integers(2**31))
    video = moving_pattern_clip(label, seed, frames=FRAMES, size=SIZE, speed_range=(0.15, 0.35)).astype(np.float32) / 255
    contrast = rng.uniform(0.4, 0.8)
    video = 0.5 + (video - 0.5) * contrast
    return _finish(video, rng, 0.07)


def render_appearance(label: int, rng: np.random.Generator) -> np.ndarray:
    """A small shape of class ``label`` drifting at random over a textured background with distractor blobs."""
    background = 0.3 + 0.4 * _texture(rng, SIZE, 6)
    colour = _colour(rng, background.mean((0, 1)))
    r = rng.uniform(4.5, 7.0)
    pos = rng.uniform(r + 4, SIZE - r - 4, 2)
    vel = rng.normal(0, 0.35, 2)
    blobs = _blobs(rng)
    centres = [np.clip(pos + vel * t, r + 1, SIZE - r - 1) for t in range(FRAMES)]
    return _finish(_moving_shape(background, blobs, SHAPES[label], centres, r, colour), rng, 0.1)


APPEARANCE_MOTION_SHAPES = ("disk", "square", "cross")
APPEARANCE_MOTION_MOVES = ("left", "right", "up")


def render_appearance_motion(label: int, rng: np.random.Generator) -> np.ndarray:
    """One shape (3 kinds) moving in one of 3 directions over a static texture; class = (shape, direction)."""
    shape = APPEARANCE_MOTION_SHAPES[label // len(APPEARANCE_MOTION_MOVES)]
    move = APPEARANCE_MOTION_MOVES[label % len(APPEARANCE_MOTION_MOVES)]
    background = 0.3 + 0.4 * _texture(rng, SIZE, 6)
    colour = _colour(rng, background.mean((0, 1)))
    r = rng.uniform(3.5, 5.5)
    speed = rng.uniform(0.5, 1.0)  # pixels per frame
    direction = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0)}[move]
    start = rng.uniform(0, SIZE, 2)  # anywhere on the torus: no frame tells the direction by position
    centres = [start + np.array(direction) * speed * t + rng.normal(0, 0.3, 2) for t in range(FRAMES)]
    return _finish(_moving_shape(background, [], shape, centres, r, colour), rng, 0.12)


ORDER_MOVES = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0)}
ORDERS = tuple((a, b) for a in ORDER_MOVES for b in ORDER_MOVES if a != b)


def render_order(label: int, rng: np.random.Generator) -> np.ndarray:
    """A small square moves one way, turns at a random time in the middle third of the clip and moves another
    way, over a textured background with distractor blobs; class = (first, second) direction. "left then
    right" and "right then left" hold the same motions: only their order tells them apart."""
    first, second = (np.array(ORDER_MOVES[m]) for m in ORDERS[label])
    background = 0.3 + 0.4 * _texture(rng, SIZE, 6)
    colour = _colour(rng, background.mean((0, 1)))
    r, speed = rng.uniform(2.5, 4.0), rng.uniform(1.0, 1.5)
    turn = int(rng.integers(FRAMES // 3, 2 * FRAMES // 3 + 1))
    path = np.array([first * min(t, turn) + second * max(t - turn, 0) for t in range(FRAMES)]) * speed
    start = rng.uniform(0, SIZE, 2)  # anywhere on the torus, whatever the class
    blobs = _blobs(rng)
    centres = [start + path[t] + rng.normal(0, 0.3, 2) for t in range(FRAMES)]
    return _finish(_moving_shape(background, blobs, "square", centres, r, colour), rng, 0.12)


FINE_DIRECTIONS = ("left", "right", "up", "down")
FINE_DISTRACTORS = 6
FINE_DOT = 3  # the dots' side in pixels


def render_fine_motion(label: int, rng: np.random.Generator) -> np.ndarray:
    """One 3x3 dot moving steadily (0.5-0.8 px per frame) in one of 4 directions among 6 look-alike dots that
    jitter in place and flicker, over a fine random texture; class = the steady dot's direction. The frame is a
    torus (the dot starts anywhere and wraps around), so where it is in any one frame says nothing. (Suite v2's
    2x2 dot at 0.8-1.3 px per frame moved further than its size between the demo presets' 4 sampled frames, and
    no retrain learned it from 80-320 clips per class: docs/RESULTS.md.)"""
    direction = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}[FINE_DIRECTIONS[label]]
    background = 0.25 + 0.3 * _texture(rng, SIZE, 12)
    level = np.float32(rng.uniform(0.85, 1.0))
    speed = rng.uniform(0.5, 0.8)
    start = rng.uniform(0, SIZE, 2)
    anchors = rng.uniform(0, SIZE, (FINE_DISTRACTORS, 2))
    video = np.empty((FRAMES, SIZE, SIZE, 3), np.float32)
    square = np.array([[i, j] for i in range(FINE_DOT) for j in range(FINE_DOT)])
    for t in range(FRAMES):
        frame = background.copy()
        spots = anchors + rng.normal(0, 0.7, anchors.shape)
        dots = np.concatenate([spots[rng.random(len(spots)) < 0.75], [start + np.array(direction) * speed * t]])
        for corner in np.floor(dots).astype(int):
            ys, xs = np.mod(corner + square, SIZE).T
            frame[ys, xs] = level
        video[t] = frame
    return _finish(video, rng, 0.1)


TASKS: dict[str, Task] = {
    "motion": Task(
        "motion", MOTIONS, "tell 8 slow motions of a low-contrast, noisy texture apart; no single frame helps",
        ("T-NC", "T-RC"), "nothing", render_motion, 40),
    "appearance": Task(
        "appearance", SHAPES, "recognise one of 8 small shapes drifting over clutter; any frame shows the class",
        ("S-NC", "S-RC"), "the class", render_appearance, 80),
    "appearance_motion": Task(
        "appearance_motion", tuple(f"{s}_{m}" for s in APPEARANCE_MOTION_SHAPES for m in APPEARANCE_MOTION_MOVES),
        "recognise the shape of one object and the direction it moves in", ("S-NC", "S-RC", "T-NC", "T-RC"),
        "the shape", render_appearance_motion, 144,
        hidden=tuple(i % len(APPEARANCE_MOTION_MOVES) for i in range(9))),  # the direction
    "order": Task(
        "order", tuple("_then_".join(o) for o in ORDERS),
        "tell in which order an object moved two ways (left then right is not right then left)",
        ("T-NC", "T-RC"), "nothing", render_order, 400, search_per_class=200, retrain_epochs=60, version=4),
    "fine_motion": Task(
        "fine_motion", tuple(f"dot_{d}" for d in FINE_DIRECTIONS),
        "find the one small dot that moves steadily among look-alike dots that jitter and flicker, and its direction",
        ("S-NC", "T-NC", "T-RC"), "nothing", render_fine_motion, 800, search_per_class=400, retrain_epochs=60,
        version=4),
}


def get_task(name: str) -> Task:
    """A task of :data:`TASKS` by name; unknown names fail with the list."""
    from pvnas.errors import ConfigError

    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; expected one of: {', '.join(TASKS)}") from None


def task_of(spec: str) -> Task | None:
    """The suite task a dataset spec names (``task:NAME[?...]``); None for other data."""
    kind, _, name = spec.partition("?")[0].partition(":")
    return get_task(name) if kind == "task" else None


def retrain_epochs(spec: str) -> int:
    """The studies' retrain length on a dataset spec: a suite task's own (``task:NAME[?...]``), else
    :data:`RETRAIN_EPOCHS`. Why per task: on ``fine_motion`` and ``order`` a seed can sit at chance for 15-25
    epochs before it learns, and a 30-epoch retrain then ends wherever the cosine leaves it (docs/RESULTS.md)."""
    task = task_of(spec)
    return task.retrain_epochs if task else RETRAIN_EPOCHS


def search_spec(spec: str) -> str:
    """The data the studies search on for a retrain on ``spec``: a suite task's first ``search_per_class`` training
    clips per class (``?train=N``; a spec that names its own ``train`` keeps it), other data as given. Why: a
    retrain memorises a split that a search ranks operations on well (``order``: docs/RESULTS.md), and DARTS too
    searches on part of the data it retrains on."""
    task, query = task_of(spec), spec.partition("?")[2]
    if task is None or not task.search_per_class or "train" in (o.partition("=")[0] for o in query.split("&")):
        return spec
    return f"{spec}{'&' if query else '?'}train={task.search_per_class}"


def render_clip(task: Task, label: int, seed: int) -> np.ndarray:
    """uint8 ``(FRAMES, SIZE, SIZE, 3)`` clip of ``task``'s class ``label``; same seed, same clip."""
    if not 0 <= label < len(task.classes):
        raise ValueError(f"task {task.name}: label must be in [0, {len(task.classes)}), got {label}")
    video = task.render(label, np.random.default_rng(seed))
    return (video * 255).round().astype(np.uint8)

