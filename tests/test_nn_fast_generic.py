"""The generic kernels keep the autocast dtype: a bf16 step stays bf16 where the conv it replaces would be."""

import torch
import torch.nn.functional as F

from pvnas.nn.fast.generic import depthwise_by_shifts


def test_shifted_depthwise_computes_in_the_autocast_dtype():
    """Under bf16 autocast (CPU's here, CUDA's in a run) the shifted depthwise conv is bf16 like the conv2d it stands
    for: with the float32 weight every tap product was promoted to float32 (the compiled GPU path ran in fp32)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, 10, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(6, 1, 3, 3, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        shifted = depthwise_by_shifts(x.to(torch.bfloat16), w, (1, 1), (2, 2), 2, 6)
        conv = F.conv2d(x.to(torch.bfloat16), w, None, 1, 2, 2, 6)
    assert shifted.dtype == conv.dtype == torch.bfloat16
    torch.testing.assert_close(shifted.float(), conv.float(), rtol=0.05, atol=0.05)
    shifted.float().sum().backward()
    assert x.grad.dtype == w.grad.dtype == torch.float32  # (gradients come back in the leaves' dtype)
    with torch.no_grad():  # outside autocast: the input's dtype, float64 parity untouched
        assert depthwise_by_shifts(x.double(), w.double(), (1, 1), (1, 1), 1, 6).dtype == torch.float64


def test_skip_noise_keeps_the_node_sums_in_the_autocast_dtype():
    """NoisyDARTS' noise times the float32 identity weight made every normal cell's node sums float32 under bf16
    autocast (twice the bytes of every element-wise pass after it): the noise term joins the sum in its dtype."""
    from pvnas.config import SEARCH_PRESETS, override
    from pvnas.nn.fast.policy import generic_kernels
    from pvnas.nn.supernet import supernet_from_config
    from pvnas.search.remedies import remedies_of

    cfg = override(SEARCH_PRESETS["tiny"], channels=4, remedies={"skip_noise": 0.2})
    torch.manual_seed(0)
    net = supernet_from_config(cfg, 5, remedies_of(cfg))
    dtypes = []
    for cell in net.cells.values():
        cell.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    with generic_kernels(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(2, 3, 4, 16, 16)).float().sum().backward()
    assert dtypes == [torch.bfloat16] * 4
    assert all(a.grad is not None and a.grad.dtype == torch.float32 for a in net.alphas.values())
