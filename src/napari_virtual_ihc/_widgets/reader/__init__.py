"""The blinded reader-study widget: ``form`` (Qt controls), ``keys`` (the keyboard map), ``widget`` (cases,
answers, activity time); the study itself is the core's (``study.ReaderSession``, ``study.coordinator``)."""

from .widget import ReaderStudyWidget

__all__ = ["ReaderStudyWidget"]
