"""Training on real Sentinel-2 NDVI and real land-use polygons, spatially held out.

``../shared/data/real/slovenia-s2``: 68 dates of real NDVI with validity masks over about
1 km² near Ljubljana, and the Slovenian LPIS polygons. Shrubland is 3.6 % of the labelled
pixels in 32 small polygons, most of its pixels on a class boundary: hard, as real
encroachment mapping is. Cultivated land (11 pixels) is too rare to score and is left out
with ``--classes``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from .conftest import REAL_DATA, agrimon_cli

REAL = REAL_DATA / "slovenia-s2"
CLASSES = "artificial surface,forest,grassland,schrubland"  # the LPIS spelling
SEEDS = (0, 1, 2)
#: The mean held-out shrubland F1 the issue asks for.
MIN_MEAN_F1 = 0.30

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REAL / "ndvi_timeseries.tif").is_file(), reason=f"real data missing: {REAL}"
    ),
]


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NDVI series with every invalid (cloudy, no data) observation set to NaN."""
    with (
        rasterio.open(REAL / "ndvi_timeseries.tif") as ndvi,
        rasterio.open(REAL / "valid_timeseries.tif") as valid,
    ):
        values, ok = ndvi.read(), valid.read().astype(bool)
        profile, names = ndvi.profile, ndvi.descriptions
    values[~ok] = np.nan
    path = tmp_path_factory.mktemp("slovenia") / "ndvi_valid.tif"
    with rasterio.open(path, "w", **{**profile, "nodata": float("nan")}) as dst:
        dst.write(values)
        dst.descriptions = names
    return path


@pytest.fixture(scope="module")
def runs(features: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = []
    for seed in SEEDS:
        folder = tmp_path_factory.mktemp(f"seed{seed}") / "model"
        proc = agrimon_cli(
            "train",
            "invasive",
            "--features",
            str(features),
            "--labels",
            str(REAL / "lulc.gpkg"),
            "--class-column",
            "LULC_NAME",
            "--classes",
            CLASSES,
            "--target",
            "schrubland",
            "--models",
            "tempcnn",
            "--seed",
            str(seed),
            "--out",
            str(folder),
            timeout=1200,
        )
        assert proc.returncode == 0, proc.stderr
        out.append(json.loads((folder / "metrics.json").read_text()))
    return out


def test_shrubland_beats_both_baselines_on_held_out_blocks(runs: list[dict[str, Any]]) -> None:
    f1 = []
    for m in runs:
        ours = m["classes"]["schrubland"]["f1"]
        base = {b: s["classes"]["schrubland"]["f1"] for b, s in m["baselines"].items()}
        print(f"shrubland F1 {ours:.3f}; baselines {base}")
        assert ours > max(base.values())
        f1.append(ours)
    print(f"mean shrubland F1 over seeds {SEEDS}: {np.mean(f1):.3f}")
    # Measured: 0.339, 0.321, 0.319 (seeds 0-2, mean 0.326): an ensemble of three networks
    # that summarise the gappy series themselves (one network on the raw series: 0.254).
    assert np.mean(f1) >= MIN_MEAN_F1
    assert all(m["model"] == "tempcnn" for m in runs)
