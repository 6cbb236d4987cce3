"""Pads that keep bf16 under autocast: same output, no fp32 detour."""

from __future__ import annotations

import copy

import torch
from torch import nn

from napari_virtual_ihc.inference.crop import CropContext, use_cropping
from napari_virtual_ihc.inference.pads import (
    DtypeKeepingReflectionPad2d,
    DtypeKeepingReplicationPad2d,
    keep_pads_in_input_dtype,
)
from napari_virtual_ihc.models import build_generator


def test_autocast_upcasts_a_plain_reflection_pad_but_not_the_dtype_keeping_one() -> None:
    x = torch.randn(1, 4, 8, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert nn.ReflectionPad2d(1)(x).dtype == torch.float32  # the detour this module removes
        assert DtypeKeepingReflectionPad2d(1)(x).dtype == torch.bfloat16
        assert DtypeKeepingReplicationPad2d(1)(x).dtype == torch.bfloat16
    assert torch.equal(DtypeKeepingReflectionPad2d(2)(x), nn.ReflectionPad2d(2)(x))
    assert torch.equal(DtypeKeepingReplicationPad2d(2)(x), nn.ReplicationPad2d(2)(x))


def test_a_generator_with_dtype_keeping_pads_gives_the_same_bf16_output_cropped_or_not() -> None:
    torch.manual_seed(0)
    model = build_generator("resnet", n_blocks=3, ngf=8, padding_type="reflect").eval()
    fast = copy.deepcopy(model)
    replaced = keep_pads_in_input_dtype(fast)
    assert replaced == 2 + 2 * 3  # the input and output pads, two per residual block
    assert not any(type(m) is nn.ReflectionPad2d for m in fast.modules())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = model(x), fast(x)
    assert got.dtype == want.dtype
    assert torch.equal(got, want)  # padding moves values: bit-identical to the fp32 detour
    # the cropped trunk recognises the subclass: its pads are skipped on the sides with context, as before
    outs = []
    for variant in (copy.deepcopy(model), fast):
        ctx = CropContext()
        cropped, blocks = use_cropping(variant, 40, ctx)
        assert blocks > 0
        ctx.sides = (True, False, False, True)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(cropped(torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))))
    assert torch.equal(outs[0], outs[1])
