"""The exact layer-by-layer pass: the whole-image forward's statistics and output, band by band, with a
fraction of its memory; the engine takes it when one whole-image forward does not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_helpers import small_generator
from test_engine_quality import level0, whole_pass
from torch import nn

from napari_virtual_ihc.ihc_store.layout import DONE_FILE, NORM_STATS_FILE
from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference import streamed_pass as streamed
from napari_virtual_ihc.inference.devices.probes import cpu_has_bf16
from napari_virtual_ihc.inference.dropout import DropoutMode, set_positions, with_positional_dropout
from napari_virtual_ihc.inference.normalization import estimate_instance_stats
from napari_virtual_ihc.inference.quality import psnr
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.inference.slide_stats import POOLED_PRECISION_MARK
from napari_virtual_ihc.inference.tiling import POOLED_BYTES
from napari_virtual_ihc.models.registry import build_generator
from napari_virtual_ihc.slides.base import ArraySlide


def _whole(module: nn.Module, x: torch.Tensor, batch_norms: bool = False, **kw):
    outs: list[torch.Tensor] = []
    stats = estimate_instance_stats(
        module, [x], [[(0.0, 0.0, 1.0, 1.0)]], outputs=outs, batch_norms=batch_norms, **kw
    )
    return stats, to_uint8(outs[0], "minus_one_one")[0]


@pytest.mark.parametrize(
    "conv",
    [
        nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 5, 7)),
        nn.Conv2d(3, 5, 3, stride=2, padding=1),
        nn.Conv2d(3, 5, 5, stride=3, padding=2, dilation=2),
        nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1),
        nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1),
        nn.ConvTranspose2d(3, 5, 5, stride=3, padding=2, output_padding=2, dilation=1),
    ],
)
def test_a_layer_run_in_bands_of_rows_equals_it_run_whole(conv):
    program = streamed.layer_program(conv if isinstance(conv, nn.Sequential) else nn.Sequential(conv))
    assert program is not None and len(program) == 1
    op = program[0]
    assert isinstance(op, streamed.Spatial)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 53, 31)
    with torch.no_grad():
        whole = conv(x)
        assert whole.shape[2] == op.rows.out_size(53) and whole.shape[3] == op.cols.out_size(31)
        for step in (1, 4, 7):  # bands of 1, 4 and 7 output rows
            parts = []
            for o0 in range(0, whole.shape[2], step):
                o1 = min(whole.shape[2], o0 + step)
                i0, i1, cut = op.rows.in_rows(o0, o1, 53)
                y = x[:, :, i0:i1]
                for m in op.modules:
                    y = m(y)
                parts.append(y[:, :, cut : cut + o1 - o0])
            torch.testing.assert_close(torch.cat(parts, 2), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("winograd", [False, True])
def test_the_streamed_pass_gives_the_whole_forwards_statistics_and_output_on_an_odd_sized_image(
    monkeypatch, he_1024, winograd
):
    monkeypatch.setattr(streamed, "BAND_VALUES", 1 << 13)  # many bands even on a small image
    torch.manual_seed(0)
    model = build_generator("resnet", ngf=8, n_blocks=3, norm="instance").eval()
    x = to_input(np.ascontiguousarray(he_1024[:203, :157])[None], "minus_one_one")
    ref_stats, ref = _whole(model, x, winograd=winograd)
    stats, out = streamed.streamed_pass(model, x, "minus_one_one", winograd=winograd)
    assert set(stats) == set(ref_stats) and len(stats) == 1 + 2 + 2 * 3 + 2
    for name, (mean, var) in ref_stats.items():
        np.testing.assert_allclose(stats[name][0], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats[name][1], var, rtol=1e-4, atol=1e-6)
    assert out.shape == ref.shape and np.abs(out.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_slide_batch_norm_and_positional_dropout_stream_as_the_whole_forward_runs_them(
    monkeypatch, he_1024, norm
):
    monkeypatch.setattr(streamed, "BAND_VALUES", 1 << 12)
    torch.manual_seed(1)
    model = build_generator("resnet", ngf=8, n_blocks=2, norm=norm, use_dropout=True).eval()
    base, _ = with_positional_dropout(model, DropoutMode.parse("sample"), 7)
    x = to_input(np.ascontiguousarray(he_1024[100:281, 50:189])[None], "minus_one_one")
    set_positions(base, [(40, 68)], (181, 139))  # the window's place on the plane: the dropout masks
    _, ref = _whole(base, x, batch_norms=norm == "batch")
    _, out = streamed.streamed_pass(base, x, "minus_one_one", origin=(40, 68), batch_norms=norm == "batch")
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    _, elsewhere = streamed.streamed_pass(
        base, x, "minus_one_one", origin=(400, 68), batch_norms=norm == "batch"
    )
    assert np.abs(elsewhere.astype(int) - ref.astype(int)).max() > 10  # other masks: the origin is used


def test_models_it_cannot_band_are_refused_and_its_memory_is_a_fraction_of_one_forward():
    assert streamed.layer_program(build_generator("unet_256", norm="instance")) is None  # skip connections
    conditioned = build_generator("resnet", input_nc=4, conditioning_planes=1, norm="instance")
    assert streamed.layer_program(conditioned) is None
    model = build_generator("resnet", ngf=64, n_blocks=9, norm="instance")
    side = 4272  # a 4096 px job's windows
    peak = streamed.streamed_peak_bytes(model, (side, side), "fp32")
    whole = POOLED_BYTES["fp32"] * 64 * side * side  # one whole-image forward, measured per pixel and channel
    assert peak is not None and peak < whole / 3.5
    bf16 = streamed.streamed_peak_bytes(model, (side, side), "bf16")
    assert bf16 is not None and bf16 < 0.6 * peak


def test_a_batch_job_too_large_for_one_forward_streams_to_the_whole_image_output(
    monkeypatch, he_1024, tmp_path
):
    model = small_generator("instance", ngf=4, n_blocks=3)
    img = he_1024[:640, :640]
    # as if one whole-image forward needed far more memory than there is: the pooled pass cannot run
    monkeypatch.setitem(POOLED_BYTES, "fp32", 1e9)
    monkeypatch.setattr(streamed, "BAND_VALUES", 1 << 15)
    settings = EngineSettings(tile=256, batch=1, skip_background=False, precision="fp32")
    rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "s.ome.zarr", settings)
    assert rep.settings["stats"]["source"] == "streamed" and rep.settings["pooled_pass"] is True
    assert rep.settings["stats"]["reused_tiles"] == rep.tiles_done == 9
    assert psnr(level0(tmp_path / "s.ome.zarr"), whole_pass(model, img)) >= 60.0
    # killed while writing the pass's tiles: the resumed run streams again, to the same pixels
    store = tmp_path / "s.ome.zarr"
    first = level0(store)
    lines = (store / DONE_FILE).read_text().splitlines(keepends=True)
    (store / DONE_FILE).write_text("".join(lines[:4]))
    resumed = stain_slide(ArraySlide(img, 0.5), model, store, settings)
    assert resumed.tiles_resumed == 4 and resumed.settings["stats"]["source"] == "streamed"
    assert np.array_equal(level0(store), first)


def test_which_jobs_stream_memory_the_model_and_how_the_job_started_decide():
    from test_slide_stats import _request

    from napari_virtual_ihc.inference.slide_stats import exact_pass_fits, pooled_pass_fits, streamed_pass_fits

    model = build_generator("resnet", ngf=64, n_blocks=9, norm="instance")
    job = {"module": model, "pooled_limit_mp": 6.0}  # a 4096 px job of four 2048 px tiles: 18 MP of windows
    assert not pooled_pass_fits(_request(4096, 2048, memory_mp=6.0, **job, streamed_bytes=5e9))
    assert streamed_pass_fits(_request(4096, 2048, memory_mp=6.0, **job, streamed_bytes=5e9))
    assert not exact_pass_fits(_request(4096, 2048, memory_mp=6.0, **job, streamed_bytes=2e9))  # too little
    assert not exact_pass_fits(_request(4096, 2048, memory_mp=6.0, **job))  # interactive / asked: never
    sampled = {"pooled_pass": np.array(False)}  # a resumed job that started with sampled statistics
    assert not exact_pass_fits(_request(4096, 2048, memory_mp=6.0, **job, streamed_bytes=5e9, saved=sampled))
    unet = build_generator("unet_256", norm="instance")
    assert not streamed_pass_fits(
        _request(4096, 2048, memory_mp=6.0, module=unet, pooled_limit_mp=6.0, streamed_bytes=5e9)
    )


def test_a_cancel_during_the_streamed_pass_stops_it_and_a_rerun_streams_to_the_same_pixels(
    monkeypatch, he_1024, tmp_path
):
    import threading

    model = small_generator("instance", ngf=4, n_blocks=3)
    img = he_1024[:640, :640]
    monkeypatch.setitem(POOLED_BYTES, "fp32", 1e9)  # one whole-image forward does not fit: the job streams
    monkeypatch.setattr(streamed, "BAND_VALUES", 1 << 12)
    settings = EngineSettings(tile=256, batch=1, skip_background=False, precision="fp32")
    cancel = threading.Event()
    moments = streamed.channel_moments

    def cancel_once_under_way(*args, **kwargs):  # the user presses cancel while the pass runs
        cancel.set()
        return moments(*args, **kwargs)

    monkeypatch.setattr(streamed, "channel_moments", cancel_once_under_way)
    store = tmp_path / "s.ome.zarr"
    rep = stain_slide(ArraySlide(img, 0.5), model, store, settings, cancel=cancel)
    assert rep.cancelled and rep.tiles_done == 0 and not rep.store_complete
    monkeypatch.setattr(streamed, "channel_moments", moments)
    again = stain_slide(ArraySlide(img, 0.5), model, store, settings)
    assert again.settings["stats"]["source"] == "streamed" and again.store_complete and again.tiles_done == 9
    stain_slide(ArraySlide(img, 0.5), model, tmp_path / "ref.ome.zarr", settings)
    assert np.array_equal(level0(store), level0(tmp_path / "ref.ome.zarr"))


@pytest.mark.skipif(not cpu_has_bf16(), reason="bf16 runs only where the CPU has bf16 instructions")
def test_a_bf16_job_streams_in_bf16_and_stays_at_bf16s_own_distance_from_the_fp32_forward(
    monkeypatch, he_1024, tmp_path
):
    model = small_generator("instance", ngf=16, n_blocks=3)  # wide enough for the Winograd kernels
    img = he_1024[:512, :512]
    monkeypatch.setitem(POOLED_BYTES, "bf16", 1e9)
    monkeypatch.setattr(streamed, "BAND_VALUES", 1 << 15)
    settings = EngineSettings(tile=256, batch=1, skip_background=False, precision="bf16", winograd=True)
    rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "b.ome.zarr", settings)
    assert rep.settings["stats"]["source"] == "streamed" and rep.settings["compute"]["precision"] == "bf16"
    with np.load(tmp_path / "b.ome.zarr" / NORM_STATS_FILE) as z:
        assert str(z[POOLED_PRECISION_MARK]) == "bf16"
    assert psnr(level0(tmp_path / "b.ome.zarr"), whole_pass(model, img)) >= 40.0
