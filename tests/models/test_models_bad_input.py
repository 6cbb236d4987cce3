"""Bad checkpoints get typed, readable errors, and a pickle with a code payload never runs."""

from __future__ import annotations

import os
import pathlib
import pickle
from pathlib import Path

import pytest
import torch

from napari_virtual_ihc.models import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    ModelSpec,
    ShapeMismatchError,
    UnknownArchitectureError,
    UnsafeCheckpointError,
    build_generator,
    load_generator,
    save_generator,
)


class WritesMarker:
    """Unpickling this calls ``Path.write_text(marker, ...)``: a stand-in for any code payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "payload ran"))


@pytest.fixture(scope="module")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    return build_generator("resnet", ngf=8, n_blocks=2).state_dict()


def test_payload_is_live_when_unpickled_unsafely(tmp_path: Path) -> None:
    """Control: the payload really runs under plain pickle, so the refusal tests below mean something."""
    marker = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(WritesMarker(marker)))
    assert marker.read_text() == "payload ran"


@pytest.mark.parametrize("writer", ["torch_zip", "torch_legacy", "plain_pickle"])
def test_pickle_with_code_is_refused_and_never_runs(tmp_path: Path, tiny_state_dict, writer: str) -> None:
    marker = tmp_path / "marker"
    payload = {"state_dict": tiny_state_dict, "opt": WritesMarker(marker)}
    path = tmp_path / "latest_net_G.pth"
    if writer == "torch_zip":
        torch.save(payload, path)
    elif writer == "torch_legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(UnsafeCheckpointError, match=r"contains code|names Python code") as info:
        load_generator(path)
    assert "not loaded" in str(info.value)
    assert not marker.exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        load_generator(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for generic callers
        load_generator(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointNotFoundError):
        load_generator(tmp_path)  # a directory is not a checkpoint


@pytest.mark.parametrize("fraction", [0.0005, 0.5, 0.98])
@pytest.mark.parametrize("fmt", ["pth_zip", "pth_legacy", "safetensors"])
def test_truncated_files(tmp_path: Path, tiny_state_dict, fmt: str, fraction: float) -> None:
    path = tmp_path / f"m.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        spec = ModelSpec(arch="resnet", arch_kwargs={"ngf": 8, "n_blocks": 2})
        save_generator(path, build_generator("resnet", ngf=8, n_blocks=2), spec)
    else:
        torch.save(tiny_state_dict, path, _use_new_zipfile_serialization=fmt == "pth_zip")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CorruptCheckpointError):
        load_generator(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, this is a text file\n" * 20,
        os.urandom(4096),
        b"\x93" + os.urandom(4095),  # starts with pickle's STACK_GLOBAL opcode: still garbage, not code
        b"\x00" * 100,
    ],
    ids=str,
)
def test_garbage_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError):
        load_generator(path)


def test_no_tensor_dict_inside(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(CorruptCheckpointError, match="no state dict"):
        load_generator(tmp_path / "meta.pth")


def test_unknown_architecture(tmp_path: Path) -> None:
    torch.save({"encoder.0.weight": torch.zeros(4, 3, 3, 3), "head.bias": torch.zeros(3)}, tmp_path / "x.pth")
    with pytest.raises(UnknownArchitectureError, match="no known generator layout"):
        load_generator(tmp_path / "x.pth")
    with pytest.raises(UnknownArchitectureError, match="unknown generator architecture 'nope'"):
        build_generator("nope")


def test_shape_mismatch_names_keys_and_shapes(tmp_path: Path, tiny_state_dict) -> None:
    sd = dict(tiny_state_dict)
    sd["model.4.weight"] = torch.zeros(16, 8, 5, 5)
    torch.save(sd, tmp_path / "bad_shape.pth")
    with pytest.raises(
        ShapeMismatchError, match=r"model\.4\.weight: file \(16, 8, 5, 5\) vs model \(16, 8, 3, 3\)"
    ):
        load_generator(tmp_path / "bad_shape.pth")


def test_wrong_override_lists_missing_and_unexpected_keys(tmp_path: Path, tiny_state_dict) -> None:
    torch.save(tiny_state_dict, tmp_path / "m.pth")
    with pytest.raises(ShapeMismatchError) as info:
        load_generator(tmp_path / "m.pth", n_blocks=3, norm="batch")
    msg = str(info.value)
    assert "missing keys" in msg and "model.2.running_mean" in msg
    assert "unexpected keys" in msg and "model.1.bias" in msg
    assert isinstance(info.value, CheckpointError)


def test_text_file_named_safetensors_is_a_corrupt_checkpoint(tmp_path: Path) -> None:
    """torch.load hands some non-pickles to its safetensors reader; that must still be a CheckpointError."""
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"hello world this is not a checkpoint at all")
    with pytest.raises(CorruptCheckpointError):
        load_generator(bad)
