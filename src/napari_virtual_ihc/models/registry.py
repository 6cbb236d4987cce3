"""Architecture name -> constructor, so checkpoints name their generator and the trainer can add more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .errors import UnknownArchitectureError
from .validation import check_arch_kwargs

GeneratorFactory = Callable[..., nn.Module]
GENERATORS: dict[str, GeneratorFactory] = {}


def register_generator(name: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    """Decorator registering ``factory(**kwargs) -> nn.Module`` under ``name`` (re-registering replaces)."""

    def decorate(factory: GeneratorFactory) -> GeneratorFactory:
        GENERATORS[name] = factory
        return factory

    return decorate


def _ensure_builtins() -> None:
    # Imported for their registration side effect; lazy so registry.py has no import cycle.
    from . import asp, resnet, unet  # noqa: F401


def available_architectures() -> list[str]:
    _ensure_builtins()
    return sorted(GENERATORS)


def build_generator(arch: str, **kwargs: Any) -> nn.Module:
    """Build a freshly initialised generator of architecture ``arch`` with the given arguments."""
    _ensure_builtins()
    try:
        factory = GENERATORS[arch]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown generator architecture {arch!r}; known: {', '.join(sorted(GENERATORS))} "
            "(an architecture added by other code is known only after the module registering it is imported)"
        ) from None
    check_arch_kwargs(arch, kwargs)  # bounded before anything is allocated
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UnknownArchitectureError(f"bad arguments for architecture {arch!r}: {exc}") from exc
