"""The one box type every layer of the package shares."""

from __future__ import annotations

# A box in level-0 pixels of the source slide: (x, y, width, height).
Box = tuple[int, int, int, int]
