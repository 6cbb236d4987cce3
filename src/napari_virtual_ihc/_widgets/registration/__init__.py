"""The "Register real IHC to H&E" widget: ``form`` (Qt controls), ``widget`` (layers and tasks); the
numbers it shows come from the core (``registration``, ``registration.display``)."""

from .widget import RegistrationWidget

__all__ = ["RegistrationWidget"]
