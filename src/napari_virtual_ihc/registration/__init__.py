"""Registration of consecutive sections (core, napari-free): real IHC onto its H&E.

``register(fixed, moving)`` returns a :class:`SlideTransform` that maps points both ways, resamples moving
regions lazily at any resolution, and saves as a small JSON (+ array) tied to both files' fingerprints.
"""

from .errors import (
    NotConvergedError,
    RegistrationCancelled,
    RegistrationError,
    SwappedInputError,
    TransformMismatchError,
)
from .landmarks import read_points, rtre, write_points
from .register import RegistrationSettings, iter_registration, register
from .transform import SlideTransform, load_transform, transform_path_for

__all__ = [
    "NotConvergedError",
    "RegistrationCancelled",
    "RegistrationError",
    "RegistrationSettings",
    "SlideTransform",
    "SwappedInputError",
    "TransformMismatchError",
    "iter_registration",
    "load_transform",
    "read_points",
    "register",
    "rtre",
    "transform_path_for",
    "write_points",
]
