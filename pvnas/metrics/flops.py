"""Parameters and multiply-adds of a real module, in GMACs (multiply-adds / 1e9) per view.

One word for them everywhere in pvnas: GMACs (JSON fields ``gmacs``, ``gmacs_per_view``, ...). The paper's
Table 1 "GFLOPs", like fvcore's and most video papers', count multiply-adds too: the same numbers.

Counted by running the module once under :class:`torch.utils.flop_counter.FlopCounterMode`,
so what is counted is what executes (grouped/dilated/strided convs, the classifier), not a
formula that can drift from the code. That counter reports 2 FLOPs per multiply-add for
convolutions and matmuls; we divide by 2. Element-wise ops (BN, ReLU, pooling, adds) are not
counted, as in the fvcore/ptflops convention the paper's numbers follow. A retrain network is counted
through its reference forward, the literal ops of the architecture: its fast forward runs "3+1x1" as one
conv where that saves multiply-adds, which would make the count depend on the input size.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from pvnas.nn.network import Network

_aten = torch.ops.aten


class _MetaShapes(TorchDispatchMode):
    """On the meta device, answer the uncounted shape-keeping ops (ReLU, BatchNorm, same-shape adds) with an empty
    tensor of their output's shape: their meta kernels are Python and made a count 3x slower; the counted ops
    (convolutions, matmuls) still run their own meta kernels. Checked against CPU counts in the tests."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is _aten.relu.default:
            return torch.empty_like(args[0])
        if func is _aten.relu_.default:
            return args[0]
        if func in (_aten.add.Tensor, _aten.add_.Tensor) and isinstance(args[1], torch.Tensor) \
                and args[0].shape == args[1].shape and not kwargs:
            return args[0] if func is _aten.add_.Tensor else torch.empty_like(args[0])
        if func is _aten.native_batch_norm.default:
            return torch.empty_like(args[0]), args[0].new_empty(0), args[0].new_empty(0)
        return func(*args, **(kwargs or {}))


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, dict[str, int]]:
    """Multiply-adds of one forward of ``model`` on a batch of ``input_shape`` ``(N, 3, T, H, W)``: the total and
    each submodule's (by qualified name, submodules included; a module that computes none is absent).

    Runs in eval mode without gradients and restores the training flag afterwards. On the meta device
    (a model built under ``torch.device("meta")``) nothing is computed and the count is the same, in a fraction
    of the time.
    """
    shape = tuple(int(d) for d in input_shape)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training, impl = model.training, getattr(model, "impl", None)
    model.eval()
    if isinstance(model, Network):
        model.impl = "reference"
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            if device.type == "meta":
                with _MetaShapes():
                    model(torch.zeros(shape, device=device))
            else:
                model(torch.zeros(shape, device=device))
    finally:
        model.train(was_training)
        if isinstance(model, Network):
            model.impl = impl
    root = type(model).__name__  # the counter names modules from the root's class name
    per_module = {name[len(root) + 1 :]: sum(counts.values()) // 2 for name, counts in counter.get_flop_counts().items()
                  if name.startswith(root + ".")}
    return counter.get_total_flops() // 2, per_module


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int | float]:
    """``{"params": int, "gmacs": float}`` of ``model`` on one clip of ``input_shape`` (and ``gflops``, the same
    number under the name pvnas 0.1 gave it, kept for the scripts that read it).

    ``input_shape`` is ``(3, T, H, W)`` or ``(N, 3, T, H, W)``; with N views the count is
    divided by N, so ``gmacs`` is always per view. Runs in eval mode without gradients and
    restores the training flag afterwards.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 4:
        shape = (1,) + shape
    if len(shape) != 5 or min(shape) < 1:
        raise ValueError(f"input_shape must be (3, T, H, W) or (N, 3, T, H, W), got {tuple(input_shape)}")
    macs, _ = count_macs(model, shape)
    gmacs = macs / shape[0] / 1e9
    return {"params": sum(p.numel() for p in model.parameters()), "gmacs": gmacs, "gflops": gmacs}
