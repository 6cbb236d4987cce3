"""Training methods: name (``cfg.method``, set by each preset) -> the class holding its networks and updates."""

from __future__ import annotations

from ..config import Config, ConfigError
from .asp import Asp
from .base import Method, Step
from .cyclegan import CycleGAN
from .pix2pix import Pix2Pix
from .tdkstain import TDKstain

METHODS: dict[str, type[Method]] = {
    Pix2Pix.name: Pix2Pix,
    TDKstain.name: TDKstain,
    CycleGAN.name: CycleGAN,
    Asp.name: Asp,
}


def method_class(cfg: Config) -> type[Method]:
    try:
        return METHODS[cfg.method]
    except KeyError:
        raise ConfigError(f"unknown method {cfg.method!r}; known: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "Method", "Step", "method_class"]
