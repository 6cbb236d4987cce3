"""One device per rank: the device rule read for a given environment and GPU count (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from napari_virtual_ihc.inference.devices import DeviceError, local_rank, resolve_device


@pytest.mark.parametrize(
    ("environ", "gpus", "expected"),
    [
        ({}, 4, "cuda:0"),  # no launcher: the first GPU, named with its index
        ({"LOCAL_RANK": "2", "RANK": "6"}, 4, "cuda:2"),  # torchrun: the node-local rank, not the global one
        ({"SLURM_LOCALID": "3"}, 4, "cuda:3"),  # srun with all GPUs of the node visible
        ({"SLURM_LOCALID": "3"}, 1, "cuda:0"),  # srun --gpus-per-task=1: the task sees its one GPU
        ({"LOCAL_RANK": "1", "SLURM_LOCALID": "0"}, 2, "cuda:1"),  # torchrun inside an allocation wins
        ({"LOCAL_RANK": "1"}, 0, "cpu"),  # no GPU: the CPU, whatever the rank
    ],
)
def test_auto_picks_this_ranks_gpu(environ, gpus, expected):
    assert resolve_device("auto", environ, cuda_devices=gpus, use_mps=False) == torch.device(expected)


def test_bare_cuda_follows_the_rank_and_an_explicit_index_is_kept():
    env = {"LOCAL_RANK": "1"}
    assert resolve_device("cuda", env, cuda_devices=2) == torch.device("cuda:1")
    assert resolve_device("cuda:0", env, cuda_devices=2) == torch.device("cuda:0")
    assert resolve_device("cpu", env, cuda_devices=2) == torch.device("cpu")


def test_a_rank_without_its_gpu_is_told_what_to_do():
    with pytest.raises(DeviceError, match=r"LOCAL_RANK=2 asks for GPU 2 but this process sees 2 CUDA") as e:
        resolve_device("auto", {"LOCAL_RANK": "2", "CUDA_VISIBLE_DEVICES": "0,1"}, cuda_devices=2)
    assert "CUDA_VISIBLE_DEVICES=0,1" in str(e.value) and "--nproc_per_node 2" in str(e.value)
    with pytest.raises(DeviceError, match="only 2 CUDA device"):
        resolve_device("cuda:5", {}, cuda_devices=2)
    with pytest.raises(DeviceError, match="not a process index"):
        local_rank({"LOCAL_RANK": "first"})
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda", {}, cuda_devices=0)


def test_this_machine_resolves_without_arguments():
    dev = resolve_device("auto")
    assert dev.type in ("cpu", "cuda", "mps")
    if dev.type == "cuda":
        assert dev.index is not None


def test_device_choice_is_the_widgets_one_call():
    from napari_virtual_ihc.inference.devices import DeviceError, device_choice

    assert device_choice("cpu") == "cpu"
    assert device_choice("auto") in ("cpu", "mps") or device_choice("auto").startswith("cuda:")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            device_choice("cuda")
