"""The training module behind ``virtual-ihc-train`` (import name chosen not to collide with PyPI's ``trainer``).

It imports the plugin's core (generators, checkpoints, stain maps) and never the widgets; the core never
imports it.
"""

__version__ = "0.1.0"
