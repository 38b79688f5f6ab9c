"""The demo world's yield history: the monitor's NDVI of the demo fields and their yields."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rasterio.features import rasterize
from shapely.geometry import box

from agrimon.aoi import DEFAULT_AOI, read_aoi
from agrimon.errors import YieldDataError
from agrimon.grid import geobox_for, snap_bounds, to_lonlat
from agrimon.indices.masks import DEFAULT_INVALID_SCL
from agrimon.indices.zonal import write_zonal_table
from agrimon.sources import synth
from agrimon.sources.demo import field_truth, render_stack
from agrimon.yieldcast.data import YieldData, read_agrimon, season_bounds
from agrimon.yieldcast.demo import (
    DEMO_EOS,
    DEMO_SOS,
    demo_calendar,
    demo_fields,
    demo_history,
    demo_zonal_table,
)

# A 1.5 km square of the default AOI near Grootfontein holding 13 fields, and two seasons:
# 2018 had the harshest dry spell of the demo's seasons (6 February, severity 0.84).
AREA = to_lonlat(box(205300.0, 7826980.0, 206800.0, 7828480.0), 32734)
SEASONS = (2017, 2018)
RES = 30.0


@pytest.fixture(scope="module")
def history() -> YieldData:
    return demo_history(AREA, SEASONS, resolution_m=RES)


def _cells(field_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parcel ``(ci, cj)`` of field ids such as ``F+03815-04342``."""
    ci = np.array([int(f[1:7]) for f in field_ids], dtype=np.int64)
    cj = np.array([int(f[7:]) for f in field_ids], dtype=np.int64)
    return ci, cj


def test_the_calendar_holds_every_crop_cycle() -> None:
    # 1 November to 31 May: bare soil at both ends of the window in every field and season.
    assert (DEMO_SOS, DEMO_EOS) == (305.0, 151.0)
    fields = demo_fields(read_aoi(DEFAULT_AOI).geometry)
    ci, cj = _cells(fields["field_id"])
    seasons = range(2016, 2025)
    bounds = season_bounds(demo_calendar(fields["field_id"]), seasons)
    assert (bounds["start"].dt.strftime("%m-%d").isin(["11-01", "10-31"])).all()
    assert (bounds["end"].dt.strftime("%m-%d").isin(["05-31", "05-30"])).all()
    for season in seasons:
        window = bounds[bounds["year"] == season].iloc[0]
        first = (window["start"].date() - date(season - 1, 7, 1)).days
        last = (window["end"].date() - date(season - 1, 7, 1)).days
        cycle = synth.crop_cycle(ci, cj, season)
        assert (cycle.sowing > first + 10).all()
        assert (synth.crop_greenness(float(first), cycle) < 1e-3).all()
        assert (synth.crop_greenness(float(last), cycle) < 0.02 * cycle.peak_greenness).all()


def test_history_is_assembled_whole(history: YieldData) -> None:
    fields = demo_fields(AREA)
    assert len(fields) == 13
    assert history.units == tuple(sorted(fields["field_id"]))
    assert history.dropped == {}
    assert (history.crop, history.country, history.indicators) == ("maize", "NA", ("ndvi",))
    assert history.years == SEASONS
    assert len(history.yields) == 2 * len(fields)
    assert (history.calendar[["sos", "eos"]].to_numpy() == (DEMO_SOS, DEMO_EOS)).all()
    # Every field has a season of observations in each year, all inside the calendar.
    series = history.series.assign(unit=history.series["unit"].astype(str))
    bounds = season_bounds(history.calendar, SEASONS)
    joined = series.merge(bounds, on="unit")
    inside = joined[(joined["date"] >= joined["start"]) & (joined["date"] <= joined["end"])]
    assert len(inside.drop_duplicates(["unit", "date"])) == len(series)
    per_season = inside.groupby(["unit", "year"]).size()
    assert len(per_season) == 2 * len(fields) and per_season.min() >= 20
    # Dates are days at 00:00, one of the demo's acquisition days.
    assert (series["date"] == series["date"].dt.normalize()).all()
    acquired = {
        pd.Timestamp(d) for d in synth.acquisition_dates(date(2016, 10, 1), date(2018, 6, 30))
    }
    assert set(series["date"]) <= acquired
    assert series["value"].between(0.0, 1.0).all()


def test_yields_are_the_field_truth(history: YieldData) -> None:
    _, truth = field_truth(AREA, SEASONS)
    expected = (
        truth.rename(columns={"field_id": "unit", "season": "year", "yield_t_ha": "yield"})
        .loc[:, ["unit", "year", "yield"]]
        .sort_values(["unit", "year"], ignore_index=True)
    )
    pd.testing.assert_frame_equal(history.yields, expected, check_dtype=False)
    for season in SEASONS:
        rows = history.yields[history.yields["year"] == season]
        ci, cj = _cells(rows["unit"])
        np.testing.assert_allclose(
            rows["yield"], synth.field_yield(ci, cj, season), atol=5e-4, rtol=0
        )


def test_ndvi_is_the_clear_pixel_mean_of_the_rendered_field(history: YieldData) -> None:
    # Render one field's season by hand on the same 30 m pixels and average its clear
    # pixels per date: that is the history, field-day for field-day.
    fields = demo_fields(AREA).set_index("field_id")
    fid = "F+03817-04340"
    local = fields.loc[[fid]].to_crs(32734)
    grid = geobox_for(snap_bounds(tuple(local.total_bounds), RES), 32734, RES)
    days = synth.acquisition_dates(date(2017, 11, 1), date(2018, 5, 31))
    times = [synth.acquisition_time(d, 21.0) for d in days]  # the zone's central meridian
    ds = render_stack(grid, times, bands=("red", "nir", "scl")).compute()
    inside = rasterize(
        [(local.geometry.iloc[0], 1)], out_shape=grid.shape, transform=grid.affine
    ).astype(bool)
    red, nir = ds["red"].values[:, inside], ds["nir"].values[:, inside]
    ndvi = (nir - red) / (nir + red)
    clear = ~np.isin(ds["scl"].values[:, inside], DEFAULT_INVALID_SCL)
    share = clear.mean(axis=1)
    expected = {
        pd.Timestamp(d): float(ndvi[t][clear[t]].astype(np.float64).mean())
        for t, d in enumerate(days)
        if share[t] >= 0.5
    }
    assert 20 <= len(expected) < len(days)  # clouds took some dates
    series = history.series[history.series["unit"] == fid]
    got = dict(zip(series["date"], series["value"], strict=True))
    season = {d: v for d, v in got.items() if d >= pd.Timestamp(2017, 7, 1)}
    assert season.keys() == expected.keys()
    np.testing.assert_allclose(list(season.values()), list(expected.values()), rtol=1e-6)


def test_the_series_are_what_read_agrimon_makes_of_the_zonal_table(
    history: YieldData, tmp_path: Path
) -> None:
    fields = demo_fields(AREA)
    table = pd.concat([demo_zonal_table(fields, s, resolution_m=RES) for s in SEASONS])
    zonal_path = write_zonal_table(table, tmp_path, formats=("parquet",))[0]
    history.yields.to_csv(tmp_path / "yields.csv", index=False)
    history.calendar.to_csv(tmp_path / "calendar.csv", index=False)
    read = read_agrimon(
        zonal_path, tmp_path / "yields.csv", tmp_path / "calendar.csv", crop="maize"
    )
    pd.testing.assert_frame_equal(read.series, history.series)
    pd.testing.assert_frame_equal(read.yields, history.yields)
    pd.testing.assert_frame_equal(read.calendar, history.calendar)


def test_yields_pay_for_a_dry_spell_at_flowering(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = demo_fields(read_aoi(DEFAULT_AOI).geometry)
    ci, cj = _cells(fields["field_id"])
    season = 2018
    spell = synth.dry_spell(season)
    hit = synth.field_yield(ci, cj, season)
    cycle = synth.crop_cycle(ci, cj, season)
    local = synth.spell_severity(*synth.field_seed(ci, cj), season)

    # Exposure by hand: a 18-day spell (width 9) on the middle of flowering (spread 9).
    full = synth.DrySpell(day=220.0, length=18.0, severity=1.0)
    assert synth.stage_exposure(full, np.array([148.0]), synth.FLOWERING)[0] == pytest.approx(
        9.0 / np.sqrt(162.0)
    )
    off = synth.stage_exposure(full, np.array([148.0 - 18.0]), synth.FLOWERING)[0]
    assert off == pytest.approx(9.0 / np.sqrt(162.0) * np.exp(-0.5 * 18.0**2 / 162.0))

    # The same season without its spell.
    monkeypatch.setattr(synth, "dry_spell", lambda s: replace(spell, severity=0.0))
    spared = synth.field_yield(ci, cj, season)
    dry = synth.crop_cycle(ci, cj, season)
    loss = 1.0 - hit / spared
    assert (loss >= 0).all() and loss.max() > 0.25
    # Each field loses by hand: the grain of flowering and filling, and the peak greenness
    # a spell in canopy growth took.
    vegetative = local * synth.stage_exposure(spell, cycle.sowing, (35.0, 12.0))
    flowering = local * synth.stage_exposure(spell, cycle.sowing, (72.0, 9.0))
    filling = local * synth.stage_exposure(spell, cycle.sowing, (100.0, 12.0))
    np.testing.assert_allclose(cycle.peak_greenness, dry.peak_greenness * (1 - 0.35 * vegetative))

    def base(green: np.ndarray) -> np.ndarray:
        return 0.4 + 6.5 * green**1.5

    kept = (1 - 0.70 * flowering) * (1 - 0.35 * filling) * base(cycle.peak_greenness)
    np.testing.assert_allclose(hit / spared, kept / base(dry.peak_greenness), rtol=1e-9)
    # The loss is worst where flowering (sowing + 72 days) met the spell's middle ...
    lag = spell.day - cycle.sowing - 72.0
    worst = np.abs(lag) < 5
    assert loss[worst].mean() > 2 * loss[np.abs(lag) > 25].mean()
    # ... where the canopy shows only the wilting and an end of season a week or so early.
    early = dry.end - cycle.end
    np.testing.assert_allclose(early, 40.0 * (filling + 0.5 * flowering), rtol=1e-9)
    assert early[worst].min() > 5 and early[worst].max() < 12
    np.testing.assert_allclose(cycle.start, dry.start)


def test_the_spell_shows_in_the_history(
    history: YieldData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same two seasons rendered without 2018's spell: the fields' NDVI is lower in the
    # spell (the crop wilts) and after it (early senescence), the same before it.
    original = synth.dry_spell
    spell = original(2018)

    def spared_2018(season: int) -> synth.DrySpell:
        return replace(spell, severity=0.0) if season == 2018 else original(season)

    monkeypatch.setattr(synth, "dry_spell", spared_2018)
    spared = demo_history(AREA, SEASONS, resolution_m=RES)
    both = history.series.merge(spared.series, on=["unit", "date"], suffixes=("", "_spared"))
    assert len(both) == len(history.series)  # the spell hides no observation
    middle = datetime(2017, 7, 1) + timedelta(days=spell.day)
    since = (both["date"] - pd.Timestamp(middle)).dt.days
    drop = both["value_spared"] - both["value"]
    # 2017 is untouched; in 2018 a spell in canopy growth lowers the whole canopy, but
    # before the spell the crop had barely emerged.
    assert (drop[both["date"] < pd.Timestamp(2017, 7, 1)] == 0).all()
    assert drop[since < -3 * spell.length].abs().max() < 1e-3
    assert (drop >= 0).all()  # a spell only ever takes greenness
    during = (since.abs() <= spell.length / 4) & (both["value_spared"] > 0.5)
    assert during.sum() >= 5 and drop[during].min() > 0.03
    after = (since > 2 * spell.length) & (both["date"] < pd.Timestamp(2018, 5, 1))
    assert (drop[after] > 0.02).sum() >= 5
    hit = spared.yields["yield"].to_numpy() - history.yields["yield"].to_numpy()
    assert (hit[history.yields["year"].to_numpy() == 2018] > 0).all()


def test_sowing_against_the_rains(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = demo_fields(read_aoi(DEFAULT_AOI).geometry)
    ci, cj = _cells(fields["field_id"])
    season = 2020  # a mild spell
    sowing = synth.crop_cycle(ci, cj, season).sowing
    onset = synth.rain_onset(season)
    before = synth.field_yield(ci, cj, season)
    # Rains ten days later: each yield changes by the ratio of the sowing optima, by hand.
    monkeypatch.setattr(synth, "rain_onset", lambda s: onset + 10.0)
    after = synth.field_yield(ci, cj, season)
    expected = np.exp(-0.5 * ((sowing - onset - 17.0) / 30.0) ** 2) / np.exp(
        -0.5 * ((sowing - onset - 7.0) / 30.0) ** 2
    )
    np.testing.assert_allclose(after / before, expected, rtol=1e-9)
    # Fields sown long after the rains gain from later rains, those sown early lose.
    late, early = sowing > onset + 25, sowing < onset
    assert late.any() and early.any()
    assert (after[late] > before[late]).all() and (after[early] < before[early]).all()


def test_refuses_what_it_cannot_make() -> None:
    with pytest.raises(YieldDataError, match="south of the equator"):
        demo_history(box(10.0, 1.0, 10.1, 1.1), SEASONS)
    with pytest.raises(YieldDataError, match="at least two seasons"):
        demo_history(AREA, [2018])
    with pytest.raises(YieldDataError, match="no demo crop field"):
        demo_history(box(18.0, -30.0, 18.001, -29.999), SEASONS)
