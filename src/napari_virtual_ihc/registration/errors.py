"""Errors of slide registration: each says what was wrong and what to do."""

from __future__ import annotations


class RegistrationError(ValueError):
    """Registration could not be done or its result cannot be used (the message says why)."""


class TransformMismatchError(RegistrationError):
    """A saved transform was made for other files (their hashes differ) and is refused."""


class SwappedInputError(RegistrationError):
    """The fixed slide looks like IHC and the moving one like H&E: probably given the wrong way round."""


class NotConvergedError(RegistrationError):
    """The optimiser ended on a poor alignment; ``quality`` holds the measured figures."""

    def __init__(self, message: str, quality: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.quality = dict(quality or {})


class RegistrationCancelled(RuntimeError):
    """The cancel event was set between stages; nothing was produced."""
