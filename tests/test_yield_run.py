"""A demo monitor run forecasts the yields of the demo world's fields with the shipped model.

One season over 3 × 2 km of the default AOI's north-west fields (no encroachment map, to
keep it short). The forecasts are checked against the shipped checkpoint applied to the
run's own zonal series, against the demo world's true 2024 yields, and as GIS products.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box, mapping

from agrimon.config import SHIPPED_YIELD_MODEL, make_spec
from agrimon.monitor import run_monitor
from agrimon.sources.demo import field_truth
from agrimon.yieldcast.demo import demo_fields
from agrimon.yieldcast.forecast import load_model

from .conftest import run_gpkg

pytestmark = pytest.mark.slow

AREA = box(18.158, -19.598, 18.187, -19.577)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHIPPED_YIELD_MODEL.is_file():
        pytest.skip("the shipped yield model models/yield-demo is missing")
    tmp = tmp_path_factory.mktemp("yield-run")
    aoi = tmp / "fields.geojson"
    feature = {"type": "Feature", "properties": {"name": "fields"}, "geometry": mapping(AREA)}
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    spec = make_spec(
        aoi=aoi,
        out=tmp / "out",
        start="2023-07-01",
        end="2024-06-30",
        invasive_model="none",
        tile_px=256,
    )
    return run_monitor(spec)


def test_every_field_gets_an_end_of_season_forecast(run: Path) -> None:
    fields = demo_fields(AREA)
    frame = gpd.read_file(run_gpkg(run), layer="yield_forecast")
    assert sorted(frame["unit"]) == sorted(fields["field_id"])
    assert set(frame["lead"]) == {"eos"} and set(frame["year"]) == {2024}
    model = load_model(SHIPPED_YIELD_MODEL)
    half = model.half_width["eos"]
    np.testing.assert_allclose(frame["p90"] - frame["forecast"], half, rtol=1e-9)
    np.testing.assert_allclose(frame["forecast"] - frame["p10"], half, rtol=1e-9)
    assert (frame["model_version"] == model.version).all()
    assert (frame["history"] > 0).all()  # the shipped model learnt these fields' past
    # Areas are the fields' own, in hectares.
    area = fields.set_index("field_id")["area_ha"]
    np.testing.assert_allclose(frame.set_index("unit")["area_ha"].loc[area.index], area, rtol=1e-3)
    lonlat = gpd.read_file(run / "yield_forecast.geojson")
    assert lonlat.crs.to_epsg() == 4326 and len(lonlat) == len(frame)
    with open(run / "yield_forecast.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # The end of season is day 151 of the demo calendar: 30 May in the leap year 2024.
    assert len(rows) == len(frame) and rows[0]["issued"] == "2024-05-30"
    (item,) = run.glob("*-zones/*-zones.json")  # the STAC item of the run's tables
    assets = json.loads(item.read_text())["assets"]
    assert assets["yield_forecast_geojson"]["href"].endswith("yield_forecast.geojson")


def test_the_forecasts_follow_the_true_yields(run: Path) -> None:
    """2024 is after the model's training seasons (2016–2023): a temporal hold-out.

    The forecasts rank the fields as their true yields do; they run low on average in this
    season (the trend members extrapolate the training years' decline), which the README
    reports rather than hides.
    """
    frame = gpd.read_file(run_gpkg(run), layer="yield_forecast").set_index("unit")
    _, truth = field_truth(AREA, [2024])
    true = truth.set_index("field_id")["yield_t_ha"].loc[frame.index]
    assert np.corrcoef(frame["forecast"], true)[0, 1] > 0.7
    inside = ((true >= frame["p10"]) & (true <= frame["p90"])).mean()
    assert inside >= 0.5
