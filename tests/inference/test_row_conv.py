"""The RGB output layer as a row convolution plus sums: the same convolution, only where it applies."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from napari_virtual_ihc.inference.row_conv import RowSplitConv2d, is_row_split_eligible, use_row_split
from napari_virtual_ihc.models import build_generator


def test_row_split_equals_the_convolution_in_fp32_and_is_no_worse_in_bf16() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 3, 7)
    rows = RowSplitConv2d(conv)
    x = torch.randn(2, 64, 37, 45).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = conv(x)
        got = rows(x)
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            direct_bf16 = conv(x).float()
            rows_bf16 = rows(x)
    assert (rows_bf16 - want).abs().max() <= (direct_bf16 - want).abs().max() * 1.5
    assert (rows_bf16 - want).abs().max() <= 0.01 * want.abs().max()


def test_only_wide_unpadded_convolutions_to_few_channels_are_split() -> None:
    assert is_row_split_eligible(nn.Conv2d(64, 3, 7))
    assert not is_row_split_eligible(nn.Conv2d(64, 3, 7, padding=3))  # its own zero padding
    assert not is_row_split_eligible(nn.Conv2d(3, 64, 7))  # 7 x 64 output rows: oneDNN's blocks pay
    assert not is_row_split_eligible(nn.Conv2d(64, 3, 3))  # a 3x3: little to gain
    assert not is_row_split_eligible(nn.Conv2d(64, 3, 7, stride=2))
    assert not is_row_split_eligible(nn.utils.parametrizations.weight_norm(nn.Conv2d(64, 3, 7)))
    with pytest.raises(ValueError, match="not an unpadded"):
        RowSplitConv2d(nn.Conv2d(64, 64, 3))


def test_a_resnet_generator_with_its_output_layer_split_gives_the_same_image() -> None:
    torch.manual_seed(0)
    model = build_generator("resnet", n_blocks=2, ngf=8).eval()
    split = copy.deepcopy(model)
    assert use_row_split(split) == 1  # the 7x7 RGB layer only (the first 7x7 has 8 outputs: 56 rows)
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.inference_mode():
        want, got = model(x), split(x)
        assert (got - want).abs().max() <= 1e-5
        model.train()
        split.train()
    # training or autograd: the plain convolution's path (gradients flow to ``weight``)
    y = split(x.requires_grad_())
    y.sum().backward()
    last = next(m for m in split.modules() if isinstance(m, RowSplitConv2d))
    assert last.weight.grad is not None
