"""Clip transforms: uint8 through resize/crop/flip, float only after normalisation."""

from __future__ import annotations

import numpy as np
import torch

from pvnas.config import ClipConfig
from pvnas.data.transforms import MEAN, STD, eval_transform, hflip, normalize, resize_short_side, train_transform


def _clip(t=8, h=240, w=320):
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (t, h, w, 3), dtype=np.uint8))


def test_resize_short_side_keeps_aspect_and_dtype():
    out = resize_short_side(_clip(), 128)
    assert out.shape == (8, 128, 171, 3) and out.dtype == torch.uint8
    assert resize_short_side(_clip(h=320, w=240), 128).shape == (8, 171, 128, 3)
    flat = torch.full((2, 64, 96, 3), 77, dtype=torch.uint8)
    assert torch.all(resize_short_side(flat, 40) == 77)  # no ringing / offset on constant input
    assert resize_short_side(flat, 64) is flat


def test_train_transform_is_seeded_and_shaped():
    cfg = ClipConfig(frames=8, crop=112, scale=(128, 164))
    a = train_transform(_clip(), cfg, np.random.default_rng(5), flip=True)
    b = train_transform(_clip(), cfg, np.random.default_rng(5), flip=True)
    assert a.shape == (3, 8, 112, 112) and a.dtype == torch.float32 and torch.equal(a, b)
    outs = {train_transform(_clip(), cfg, np.random.default_rng(s), flip=True).sum().item() for s in range(8)}
    assert len(outs) > 1


def test_flip_only_when_asked():
    cfg = ClipConfig(frames=2, crop=32, scale=(32, 32))
    clip = _clip(t=2, h=32, w=32)
    flipped = [
        s
        for s in range(20)
        if not torch.equal(train_transform(clip, cfg, np.random.default_rng(s), flip=True), normalize(clip))
    ]
    assert 0 < len(flipped) < 20
    for s in flipped:
        assert torch.equal(train_transform(clip, cfg, np.random.default_rng(s), flip=True), normalize(hflip(clip)))
    assert all(
        torch.equal(train_transform(clip, cfg, np.random.default_rng(s), flip=False), normalize(clip))
        for s in range(20)
    )


def test_eval_transform_three_crops_along_long_side():
    cfg = ClipConfig(frames=4, crop=112, scale=(128, 164))
    clip = _clip(t=4)
    views = eval_transform(clip, cfg, 3)
    assert views.shape == (3, 3, 4, 112, 112)
    resized = resize_short_side(clip, 128)
    assert torch.equal(views[0], normalize(resized[:, 8:120, 0:112]))
    assert torch.equal(views[2], normalize(resized[:, 8:120, -112:]))
    assert eval_transform(clip, cfg, 1).shape == (1, 3, 4, 112, 112)


def test_normalize():
    x = torch.full((1, 1, 1, 3), 255, dtype=torch.uint8)
    out = normalize(x)
    assert out.shape == (3, 1, 1, 1)
    assert torch.allclose(out.flatten(), (1 - torch.tensor(MEAN)) / torch.tensor(STD))
