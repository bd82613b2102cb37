"""Every op of docs/design.md §1: exact names, output shapes for stride 1/2 and any T, temporal structure."""

import pytest
import torch
from torch import nn

from pvnas.space.ops import CONV_OPS, OPS, PARAMETER_FREE, SPATIAL_OPS, TEMPORAL_OPS, build_op, ops_for

DESIGN_NAMES = [
    "zero", "identity", "avg_pool_1x3x3", "max_pool_1x3x3",
    "sep_conv_1x3x3", "dil_conv_1x3x3", "conv_3x3x3", "conv_3x1x1",
]


def test_registry_names_and_order_match_design():
    assert list(OPS) == DESIGN_NAMES
    assert list(TEMPORAL_OPS) == DESIGN_NAMES
    assert list(SPATIAL_OPS) == DESIGN_NAMES[:6]
    assert ops_for("S-NC") == ops_for("S-RC") == SPATIAL_OPS
    assert ops_for("T-NC") == ops_for("T-RC") == TEMPORAL_OPS
    assert PARAMETER_FREE | CONV_OPS == set(DESIGN_NAMES)


@pytest.mark.parametrize("name", DESIGN_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("frames", [1, 4, 8])
@pytest.mark.parametrize("channels", [5, 8])
def test_op_output_shape(name, stride, frames, channels):
    op = build_op(name, channels, stride)
    x = torch.randn(2, channels, frames, 9, 10)
    y = op(x)
    h, w = (9, 10) if stride == 1 else (5, 5)
    assert y.shape == (2, channels, frames, h, w)
    if name == "zero":
        assert torch.count_nonzero(y) == 0


def test_identity_is_identity_at_stride_1_and_reduces_at_stride_2():
    x = torch.randn(1, 6, 4, 8, 8)
    assert torch.equal(build_op("identity", 6, 1)(x), x)
    reduce = build_op("identity", 6, 2)
    assert any(isinstance(m, nn.Conv3d) and m.stride == (1, 2, 2) for m in reduce.modules())


def test_temporal_stride_option_strides_time():
    for name in DESIGN_NAMES:
        y = build_op(name, 4, (2, 2, 2))(torch.randn(1, 4, 8, 8, 8))
        assert y.shape == (1, 4, 4, 4, 4), name


@pytest.mark.parametrize("name,spatial", [("conv_3x3x3", (1, 3, 3)), ("conv_3x1x1", (1, 1, 1))])
def test_temporal_ops_are_relu_conv2d_conv1d_bn(name, spatial):
    op = build_op(name, 4, 1)
    kinds = [type(m) for m in op]
    assert kinds == [nn.ReLU, nn.Conv3d, nn.Conv3d, nn.BatchNorm3d]
    assert op[1].kernel_size == spatial and op[2].kernel_size == (3, 1, 1)


def test_temporal_ops_mix_frames_and_spatial_ops_do_not():
    """Perturbing one frame changes other frames' outputs only through temporal ops."""
    x = torch.randn(1, 4, 4, 6, 6)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    for name in DESIGN_NAMES[1:]:
        op = build_op(name, 4, 1).eval()
        changed_later = not torch.allclose(op(x)[:, :, 1:], op(x2)[:, :, 1:])
        assert changed_later == name.startswith("conv_3x"), name


def test_unknown_op_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown op 'conv_5x5'.*sep_conv_1x3x3"):
        build_op("conv_5x5", 4)


def test_search_ops_have_no_affine_bn():
    op = build_op("sep_conv_1x3x3", 4, 1, affine=False)
    assert all(not m.affine for m in op.modules() if isinstance(m, nn.BatchNorm3d))


@pytest.mark.parametrize("name", DESIGN_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [1, 2])
def test_ops_accept_maps_smaller_than_their_kernel(name, stride, size):
    y = build_op(name, 4, stride)(torch.randn(1, 4, 2, size, size))
    assert y.shape[-1] == (size if stride == 1 else 1)


def test_avg_pool_matches_avgpool3d_where_that_works():
    x = torch.randn(2, 3, 4, 9, 7)
    for stride in (1, 2, (2, 2, 2)):
        ref = nn.AvgPool3d((1, 3, 3), stride=(1, stride, stride) if isinstance(stride, int) else stride,
                           padding=(0, 1, 1), count_include_pad=False)
        torch.testing.assert_close(build_op("avg_pool_1x3x3", 3, stride)(x), ref(x))
