"""``virtual-ihc-train reproduce``: one command per paper table (fit, the paper's checkpoint rule, export,
evaluation under the paper's protocol, the paper's numbers beside ours)."""

from .runner import Options, reproduce
from .tables import TABLES

__all__ = ["TABLES", "Options", "reproduce"]
