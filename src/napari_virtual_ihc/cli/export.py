"""``virtual-ihc export STORE OUT.ome.tif``: a stain store (or any slide) to a pyramidal OME-TIFF.

Argument parsing only; the streamed writer is ``export.ome_tiff``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..export import ExportError, write_ome_tiff
from ..ihc_store import PROVENANCE_KEY
from ..slides import SlideError, open_slide


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a virtual IHC store (or any slide) as a tiled pyramidal OME-TIFF (QuPath, OpenSlide)",
        description="Stream the store tile by tile into a pyramidal OME-TIFF (levels as SubIFDs for "
        "QuPath/Bio-Formats, also chained as reduced-resolution pages for OpenSlide), µm/px in the OME "
        "PhysicalSize and TIFF resolution tags, the store's provenance in the OME description.",
    )
    p.add_argument(
        "store", metavar="STORE", help="virtual IHC store (.ome.zarr) or any slide open_slide reads"
    )
    p.add_argument(
        "out", metavar="OUT.ome.tif", help="output file (refused if it exists, unless --overwrite)"
    )
    p.add_argument(
        "--compression",
        choices=("jpeg", "deflate"),
        default="jpeg",
        help="jpeg (quality 90, RGB without chroma subsampling: the mean colour within 0.1 grey level, "
        "single pixels off by a few) or deflate (lossless); default jpeg",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.name.lower().endswith((".ome.tif", ".ome.tiff")):
        print(
            f"virtual-ihc export: {out}: name it .ome.tif (QuPath and Bio-Formats go by it)", file=sys.stderr
        )
        return 2
    try:
        with open_slide(args.store) as slide:
            provenance = {"source": str(Path(args.store).resolve()), "vendor": slide.vendor}
            stored = slide.metadata().get(PROVENANCE_KEY)
            if stored:
                provenance[PROVENANCE_KEY] = stored
            write_ome_tiff(
                slide, out, compression=args.compression, provenance=provenance, overwrite=args.overwrite
            )
    except (ExportError, SlideError, FileNotFoundError) as exc:
        print(f"virtual-ihc export: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
