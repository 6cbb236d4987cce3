"""TDKstain (Peng et al. 2024), whole: the method's updates (``method``), its generator / nuclei estimator /
discriminator (``nets``), losses (``losses``) and the knowledge maps with their on-disk cache (``knowledge_maps``).
Its task-specific error analysis is an evaluation metric: ``evaluation/tdkstain_errors.py``."""

from .method import TDKstain

__all__ = ["TDKstain"]
