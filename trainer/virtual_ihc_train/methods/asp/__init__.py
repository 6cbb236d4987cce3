"""ASP (Li et al. 2023, adaptive supervised PatchNCE) and AMMFI's multi-magnification views, whole: the
method's updates (``method``), networks (``networks``), losses (``losses``) and AMMFI's views
(``magnification``)."""

from .method import Asp

__all__ = ["Asp"]
