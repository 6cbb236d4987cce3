"""Where a result goes when the user names no output folder: beside the slide, unless that is no place
to write (issue 29: the demo's Run wrote into the package's own ``samples/`` folder).

A slide inside this package, inside any installed-packages folder (site-packages, the interpreter's
library) or in a folder that cannot be written gets its results in the user's data folder instead
(``platformdirs.user_data_dir("napari-virtual-ihc")/results``; ``$XDG_DATA_HOME`` on Linux moves it). So
does an image without a file (a napari layer made in memory).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from platformdirs import user_data_dir

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def user_results_dir() -> Path:
    """The plugin's own results folder in the user's data folder."""
    return Path(user_data_dir("napari-virtual-ihc", appauthor=False)) / "results"


def installed_code_dirs() -> list[Path]:
    """Folders that hold installed code: this package and the interpreter's library and package folders."""
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    dirs = {PACKAGE_DIR}
    dirs |= {Path(sysconfig.get_path(n)).resolve() for n in names if sysconfig.get_path(n)}
    return sorted(dirs)


def is_code_or_read_only(folder: Path) -> bool:
    """True for a folder inside installed code (see ``installed_code_dirs``) or one this user cannot write."""
    folder = folder.resolve()
    if any(folder == d or d in folder.parents for d in installed_code_dirs()):
        return True
    return not os.access(folder, os.W_OK | os.X_OK)


def default_output_dir(slide_path: str | Path | None) -> Path:
    """Beside the slide; the user's results folder for an image without a file or one that lies in
    installed code or a read-only folder."""
    if slide_path is None:
        return user_results_dir()
    folder = Path(slide_path).resolve().parent
    return user_results_dir() if is_code_or_read_only(folder) else folder
