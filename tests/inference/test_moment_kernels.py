"""The statistics pass's compiled moments and affine equal plain float64 arithmetic (and their eager form)."""

from __future__ import annotations

import pytest
import torch

from napari_virtual_ihc.inference.moment_kernels import (
    channel_affine,
    channel_affine_add_,
    channel_affine_relu_,
    channel_moments,
)


def _part(dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(5)
    x = (torch.randn(1, 6, 40, 30) * 3 + 50).to(dtype).contiguous(memory_format=torch.channels_last)
    return x[0, :, 3:37, 2:29]  # a strided window of a channels-last map, large mean


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("compiled", [True, False])
def test_chunked_moments_equal_var_mean(dtype, compiled):
    part = _part(dtype)
    n, mean, m2 = channel_moments(part, compiled, chunk=6 * 27 * 5)  # 5 rows per chunk, the last one ragged
    var_ref, mean_ref = torch.var_mean(part.double(), dim=(1, 2), correction=0)
    assert n == 34 * 27
    assert (mean - mean_ref).abs().max() <= 1e-6 * mean_ref.abs().max()  # relative to the values' magnitude
    assert torch.allclose(m2 / n, var_ref, rtol=1e-5)


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("compiled", [True, False])
def test_affine_keeps_the_dtype_and_compiled_it_rounds_once(inplace, compiled):
    x = _part(torch.bfloat16)[None].contiguous(memory_format=torch.channels_last)
    scale, shift = torch.linspace(0.3, 1.7, 6), torch.linspace(-2, 2, 6)
    want = (x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)).to(
        torch.bfloat16
    )
    before = x.clone()
    y = channel_affine(x, scale, shift, inplace, compiled)
    assert y.dtype == torch.bfloat16
    # compiled: fp32 arithmetic, one bf16 rounding; eager: in bf16 (scale and product rounded too)
    assert torch.allclose(y.float(), want.float(), rtol=2**-8 if compiled else 2**-6, atol=0)
    assert (y.data_ptr() == x.data_ptr()) == inplace
    assert torch.equal(x, y if inplace else before)


def test_a_build_failure_falls_back_to_the_eager_steps(monkeypatch):
    from napari_virtual_ihc.inference import moment_kernels

    def no_compiler(fn, **kw):
        def fail(*a):
            raise RuntimeError("InductorError: no C++ compiler")

        return fail

    monkeypatch.setattr(moment_kernels, "_compiled", {})
    monkeypatch.setattr(moment_kernels, "_failed", [])
    monkeypatch.setattr(moment_kernels.torch, "compile", no_compiler)
    part = _part(torch.float32)
    n, mean, _ = channel_moments(part, compiled=True)
    assert n == 34 * 27 and torch.allclose(mean, part.double().mean((1, 2)), rtol=1e-6)
    assert "no C++ compiler" in (moment_kernels.compile_failure() or "")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("compiled", [True, False])
def test_fused_norm_relu_and_norm_sum_work_in_place_on_a_band_of_a_larger_map(dtype, compiled):
    torch.manual_seed(3)
    whole = torch.randn(1, 6, 40, 30).to(dtype).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(1, 6, 10, 30).to(dtype).contiguous(memory_format=torch.channels_last)
    scale, shift = torch.linspace(0.3, 1.7, 6), torch.linspace(-2, 2, 6)
    s, b = scale.double().view(1, -1, 1, 1), shift.double().view(1, -1, 1, 1)
    tol = 2**-6 if dtype == torch.bfloat16 else 1e-6
    for fn, want_of in (
        (lambda band: channel_affine_relu_(band, scale, shift, compiled), lambda x: (x * s + b).clamp_min(0)),
        (
            lambda band: channel_affine_add_(band, scale, shift, skip, compiled),
            lambda x: x * s + b + skip.double(),
        ),
    ):
        x = whole.clone()
        want = want_of(x[:, :, 10:20].double())
        out = fn(x[:, :, 10:20])  # rows of a stored map: a view, written in place
        assert out.data_ptr() == x[:, :, 10:20].data_ptr() and x.dtype == dtype
        assert torch.allclose(x[:, :, 10:20].double(), want, rtol=tol, atol=tol)
        assert torch.equal(x[:, :, :10], whole[:, :, :10]) and torch.equal(x[:, :, 20:], whole[:, :, 20:])
