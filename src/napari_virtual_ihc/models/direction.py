"""Which way a checkpoint translates: refuse the IHC -> H&E half of a CycleGAN pair, naming the other file.

CycleGAN saves both generators, ``<epoch>_net_G_A.pth`` (A -> B) and ``<epoch>_net_G_B.pth`` (B -> A). With
H&E as domain A (as in BCI and the papers here) G_B turns IHC into H&E: loaded by mistake it "stains" a slide
into something H&E-like without a word. File names such as ``ihc2he`` say the same.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import WrongDirectionError

_G_B = re.compile(r"net_?G_?B(?=\.|_|$)", re.IGNORECASE)
_IHC_TO_HE = re.compile(r"ihc[_-]?(?:2|to)[_-]?h(?:&)?e(?![a-z])", re.IGNORECASE)


def other_direction_file(path: Path) -> str | None:
    """The file name of the H&E -> IHC generator next to an IHC -> H&E one, or None if the name says nothing."""
    name = path.name
    if _G_B.search(name):
        return _G_B.sub(lambda m: m.group(0)[:-1] + ("A" if m.group(0)[-1] == "B" else "a"), name)
    if _IHC_TO_HE.search(name):
        return _IHC_TO_HE.sub("he2ihc", name)
    return None


def check_direction(path: Path, target_stain: str = "HER2") -> None:
    """Raise WrongDirectionError for a checkpoint that maps IHC -> H&E (by its name or its declared target)."""
    other = other_direction_file(path)
    if target_stain.strip().upper() in ("H&E", "HE", "H-E"):
        raise WrongDirectionError(f"{path.name}: its header says it produces H&E, not an IHC stain")
    if other is None:
        return
    sibling = path.with_name(other)
    where = f" ({sibling} exists)" if sibling.exists() else ""
    raise WrongDirectionError(
        f"{path.name} looks like the IHC -> H&E generator of a CycleGAN/pix2pix pair; to stain H&E into IHC "
        f"load {other}{where}. If this file really maps H&E to IHC (your domain A was IHC), rename it."
    )
