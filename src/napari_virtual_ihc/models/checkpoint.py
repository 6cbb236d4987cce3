"""The project's checkpoint format (safetensors + JSON spec) and import of the papers' ``.pth`` files.

Nothing here unpickles arbitrary objects: safetensors holds only tensors, and a ``.pth`` goes through
``torch.load(weights_only=True)``. Nothing big is allocated before the file is known to fit: the header's
arguments are bounded, the generator is built on the ``meta`` device and compared with the file's tensor
names, shapes and dtypes (read from the safetensors header alone), and only then are weights read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .detect import detect_architecture, drop_untracked_instance_norm_stats
from .direction import check_direction
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    ShapeMismatchError,
    UnsupportedFormatVersionError,
)
from .registry import build_generator
from .spec import FORMAT_VERSION, UNKNOWN_MPP_NOTE, LoadedGenerator, ModelSpec
from .state_dict_io import read_pth, read_safetensors, read_safetensors_header, sniff_format
from .validation import check_dtypes, check_finite, check_spec, parse_header_json

HEADER_KEY = "virtual_ihc"  # safetensors metadata key holding ModelSpec.to_dict() as JSON
_SPEC_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)} - {"arch_kwargs", "format_version"}
_LIST_LIMIT = 12


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    """The process umask (read, not changed, where /proc says it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def meta_state_dict(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The state dict ``spec``'s generator would have, as ``meta`` tensors (no memory allocated)."""
    with torch.device("meta"):
        return dict(build_generator(spec.arch, **spec.arch_kwargs).state_dict())


def check_state_dict(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Raise ShapeMismatchError listing missing/unexpected keys and wrong shapes (strict loading)."""
    check_against(dict(module.state_dict()), sd, what)


def check_against(expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], what: str) -> None:
    """``check_state_dict`` against an expected state dict (real or ``meta`` tensors)."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return

    def fmt(label: str, items: list[str]) -> str:
        more = f" (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
        return f"; {label} ({len(items)}): " + ", ".join(items[:_LIST_LIMIT]) + more

    parts = ""
    if missing:
        parts += fmt("missing keys", missing)
    if unexpected:
        parts += fmt("unexpected keys", unexpected)
    if shapes:
        parts += fmt("shape mismatches", shapes)
    raise ShapeMismatchError(f"{what} does not fit the generator it describes{parts}")


def save_generator(path: str | os.PathLike[str], module: nn.Module, spec: ModelSpec) -> Path:
    """Write ``module``'s weights and ``spec`` as a ``.safetensors`` file, atomically.

    The spec is checked against the module first (its architecture must rebuild a module with the same
    keys and shapes), so a file this writes always loads.  The file appears only when complete.
    """
    target = Path(path)
    check_spec(spec, str(target))
    sd = {k: v.detach().to("cpu").clone().contiguous() for k, v in module.state_dict().items()}
    check_finite(sd, f"model to save as {target}")
    check_against(meta_state_dict(spec), sd, f"module to save as {spec.arch!r} {spec.arch_kwargs}")
    header = dataclasses.replace(spec, format_version=FORMAT_VERSION).to_dict()
    metadata = {HEADER_KEY: json.dumps(header, sort_keys=True), "format": "napari-virtual-ihc"}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(sd, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600; a checkpoint is a normal file
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _spec_from_metadata(meta: dict[str, str], path: Path) -> ModelSpec | None:
    raw = meta.get(HEADER_KEY)
    if raw is None:
        return None
    d = parse_header_json(raw, str(path), HEADER_KEY)
    if not isinstance(d, dict) or "arch" not in d:
        raise CorruptCheckpointError(
            f"{path}: unreadable '{HEADER_KEY}' header (header is not an object with an 'arch')"
        )
    try:
        version = int(d.get("format_version", 1))
    except (TypeError, ValueError):
        raise CorruptCheckpointError(
            f"{path}: '{HEADER_KEY}' header has format_version {d.get('format_version')!r}, not a number"
        ) from None
    if version > FORMAT_VERSION:
        raise UnsupportedFormatVersionError(
            f"{path}: written with checkpoint format version {version}, but this napari-virtual-ihc reads "
            f"versions up to {FORMAT_VERSION}; upgrade napari-virtual-ihc to load it."
        )
    spec = ModelSpec.from_dict(d)
    check_spec(spec, str(path))
    return spec


def _apply_overrides(spec: ModelSpec, overrides: dict[str, Any]) -> ModelSpec:
    """Spec fields (``arch``, ``mpp``, ``name``...) replace the spec's; anything else is an arch argument.

    ``None`` means "not given" so CLI options map straight through.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    fields = {k: v for k, v in given.items() if k in _SPEC_FIELDS}
    arch_args = {k: v for k, v in given.items() if k not in _SPEC_FIELDS}
    if "arch" in fields and fields["arch"] != spec.arch:
        kwargs = dict(arch_args)  # a different architecture: the detected arguments no longer apply
    else:
        kwargs = {**spec.arch_kwargs, **arch_args}
    return dataclasses.replace(spec, arch_kwargs=kwargs, **fields)


def read_checkpoint(
    path: str | os.PathLike[str], **overrides: Any
) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The spec and state dict of a project ``.safetensors`` or an imported ``.pth`` (no module built).

    The state dict is known to fit the spec's architecture (names, shapes, float dtypes) and to be finite.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {p}")
    if p.stat().st_size == 0:
        raise CorruptCheckpointError(f"{p}: the file is empty")
    spec: ModelSpec | None = None
    reference = False
    imported_from = "pth"
    kind = sniff_format(p)
    if kind == "truncated_safetensors":
        raise CorruptCheckpointError(
            f"{p}: truncated safetensors file (its header runs past the end of the file)"
        )
    sd: dict[str, torch.Tensor] | None = None
    if kind == "safetensors":
        shapes, meta = read_safetensors_header(p)  # names, shapes, dtypes only: nothing allocated yet
        spec = _spec_from_metadata(meta, p)
        imported_from = "safetensors"
    else:
        sd = read_pth(p)
        shapes = sd
    if spec is None:  # a reference state dict: detect what it is
        shapes = drop_untracked_instance_norm_stats(shapes)
        if overrides.get("arch") is not None:
            arch, kwargs = str(overrides["arch"]), {}
            with contextlib.suppress(CheckpointError):
                detected_arch, detected = detect_architecture(shapes)
                if detected_arch == arch:
                    kwargs = detected
        else:
            arch, kwargs = detect_architecture(shapes)
        spec = ModelSpec(
            arch=arch,
            arch_kwargs=kwargs,
            mpp=None,
            name=p.stem,
            provenance={"imported_from": str(p), "import_format": imported_from},
        )
        reference = True
    spec = _apply_overrides(spec, overrides)
    if reference:  # an imported state dict runs as the reference test.py ran it
        spec = reference_test_mode(spec)
    check_spec(spec, str(p))  # bounded arguments before the meta build
    expected = meta_state_dict(spec)
    check_against(expected, shapes, f"{p} (as {spec.arch} {spec.arch_kwargs})")
    check_dtypes(expected, shapes, str(p))
    if sd is None:
        sd, _ = read_safetensors(p)
        sd = {k: v for k, v in sd.items() if k in shapes}
    else:
        sd = {k: v for k, v in sd.items() if k in shapes}
    check_finite(sd, str(p))
    return spec, sd


REFERENCE_MODE_NOTE = (
    "imported checkpoint: runs as the papers' test.py runs it (no --eval, so the model stays in train mode): "
    "{what}. For eval mode pass --bn-stats running --dropout off (EngineSettings(bn_stats=..., dropout=...))."
)


def reference_test_mode(spec: ModelSpec) -> ModelSpec:
    """pix2pix/BCI ``test.py`` calls ``model.eval()`` only with ``--eval``, which their READMEs do not pass:
    batch norm then uses the test image's own statistics and dropout stays on. An imported ``.pth`` records
    that as its intended mode (the project's own checkpoints record theirs in the header)."""
    norm = str(spec.arch_kwargs.get("norm", "batch" if spec.arch.startswith("unet") else "instance"))
    bn = "slide" if norm == "batch" else None
    dropout = "sample" if spec.arch_kwargs.get("use_dropout") else None
    return dataclasses.replace(spec, bn_stats=spec.bn_stats or bn, dropout=spec.dropout or dropout)


def _loading_notes(spec: ModelSpec) -> list[str]:
    """What loading assumed, said where the model is loaded (CLI, widget)."""
    notes = []
    what = []
    if spec.provenance.get("imported_from"):
        if spec.bn_stats == "slide":
            what.append("batch norm with the slide's own statistics (bn_stats=slide)")
        if spec.dropout == "sample":
            what.append("dropout on, one sample (dropout=sample)")
        if what:
            notes.append(REFERENCE_MODE_NOTE.format(what="; ".join(what)))
    if spec.mpp is None:
        notes.append(UNKNOWN_MPP_NOTE)
    return notes


def load_generator(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", **overrides: Any
) -> LoadedGenerator:
    """Load a generator in eval mode from a project checkpoint or a reference ``.pth`` state dict.

    ``overrides`` fix what detection cannot know or got wrong: ``arch``, architecture arguments
    (``n_blocks``, ``ngf``, ``norm``, ``use_dropout``, ``n_downsampling``...), or spec fields (``mpp``,
    ``name``, ``target_stain``).  Loading is strict: any missing/unexpected key or shape mismatch raises
    ShapeMismatchError naming them; bad header values InvalidSpecError, NaN/inf weights
    NonFiniteWeightsError, integer tensors in float slots CorruptCheckpointError. A checkpoint whose name
    says IHC -> H&E (CycleGAN's ``*_net_G_B.pth``) raises WrongDirectionError naming the other file.
    ``notes`` says what loading assumed (the reference test.py's batch-norm/dropout mode for an imported
    ``.pth``, an unknown µm/px).
    """
    p = Path(path)
    spec, sd = read_checkpoint(p, **overrides)  # checked against the architecture: the build below fits
    check_direction(p, spec.target_stain)
    module = build_generator(spec.arch, **spec.arch_kwargs)
    module.load_state_dict(sd, strict=True)
    module.to(device)
    module.eval()
    return LoadedGenerator(
        module=module, spec=spec, source=str(p.resolve()), sha256=file_sha256(p), notes=_loading_notes(spec)
    )
