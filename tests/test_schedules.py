"""Schedules files: period rules worked by hand, one-line validation errors, the table."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from agrimon.cli import app
from agrimon.errors import ConfigError
from agrimon.schedules import (
    DEFAULT_SCHEDULES,
    PeriodRule,
    Schedule,
    next_runs,
    parse_rule,
    read_schedules,
    resolve_period,
    run_day,
    spec_for,
)

runner = CliRunner()
D = date
SOUTH, NORTH = True, False


def _write(tmp_path: Path, entries: list[dict[str, Any]], name: str = "plan.yaml") -> Path:
    """A schedules file (JSON is YAML) beside a tiny AOI, ``tiny.geojson``."""
    aoi = tmp_path / "tiny.geojson"
    if not aoi.exists():
        aoi.write_text(json.dumps(_square(18.1, -19.6)))
    path = tmp_path / name
    path.write_text(json.dumps({"schedules": entries}))
    return path


def _square(lon: float, lat: float, side: float = 0.01) -> dict[str, Any]:
    ring = [
        [lon, lat],
        [lon + side, lat],
        [lon + side, lat + side],
        [lon, lat + side],
        [lon, lat],
    ]
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "tiny"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }


def _entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "tiny-weekly",
        "flow": "monitor",
        "parameters": {"aoi": "tiny.geojson", "source": "demo", "out": "out"},
        "period": "last 10 days",
        "cron": "0 3 * * 1",
    }
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return entry


# --- period rules, by hand ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "day", "southern", "expected"),
    [
        # last N days: the N days before the run day.
        ("last 30 days", D(2024, 3, 4), SOUTH, (D(2024, 2, 3), D(2024, 3, 3))),
        ("last 1 day", D(2024, 3, 1), SOUTH, (D(2024, 2, 29), D(2024, 2, 29))),
        ("last 7 days", D(2024, 3, 1), NORTH, (D(2024, 2, 23), D(2024, 2, 29))),
        ("last 7 days", D(2023, 3, 1), NORTH, (D(2023, 2, 22), D(2023, 2, 28))),
        ("last 10 days", D(2025, 1, 5), SOUTH, (D(2024, 12, 26), D(2025, 1, 4))),
        # last N months: from the same day N months before; on the 1st, whole months.
        ("last 1 month", D(2024, 3, 1), SOUTH, (D(2024, 2, 1), D(2024, 2, 29))),
        ("last 1 month", D(2024, 3, 31), SOUTH, (D(2024, 2, 29), D(2024, 3, 30))),
        ("last 1 month", D(2023, 3, 30), SOUTH, (D(2023, 2, 28), D(2023, 3, 29))),
        ("last 12 months", D(2024, 2, 29), SOUTH, (D(2023, 2, 28), D(2024, 2, 28))),
        ("last 3 months", D(2024, 1, 15), NORTH, (D(2023, 10, 15), D(2024, 1, 14))),
        # current season, south (July–June): from 1 July to the day before.
        ("current season", D(2024, 7, 2), SOUTH, (D(2024, 7, 1), D(2024, 7, 1))),
        ("current season", D(2024, 6, 30), SOUTH, (D(2023, 7, 1), D(2024, 6, 29))),
        ("current season", D(2024, 3, 1), SOUTH, (D(2023, 7, 1), D(2024, 2, 29))),
        # ... on the season's first day: the whole season just ended.
        ("current season", D(2024, 7, 1), SOUTH, (D(2023, 7, 1), D(2024, 6, 30))),
        # current season, north (January–December).
        ("current season", D(2024, 3, 1), NORTH, (D(2024, 1, 1), D(2024, 2, 29))),
        ("current season", D(2024, 1, 2), NORTH, (D(2024, 1, 1), D(2024, 1, 1))),
        ("current season", D(2024, 1, 1), NORTH, (D(2023, 1, 1), D(2023, 12, 31))),
        ("current season", D(2024, 7, 1), NORTH, (D(2024, 1, 1), D(2024, 6, 30))),
        # previous season: the last complete one.
        ("previous season", D(2024, 7, 1), SOUTH, (D(2023, 7, 1), D(2024, 6, 30))),
        ("previous season", D(2024, 6, 30), SOUTH, (D(2022, 7, 1), D(2023, 6, 30))),
        ("previous season", D(2024, 2, 29), SOUTH, (D(2022, 7, 1), D(2023, 6, 30))),
        ("previous season", D(2024, 1, 1), NORTH, (D(2023, 1, 1), D(2023, 12, 31))),
        ("previous season", D(2024, 12, 31), NORTH, (D(2023, 1, 1), D(2023, 12, 31))),
        ("previous season", D(2024, 2, 29), NORTH, (D(2023, 1, 1), D(2023, 12, 31))),
    ],
)
def test_period_rules_by_hand(
    rule: str, day: date, southern: bool, expected: tuple[date, date]
) -> None:
    assert resolve_period(parse_rule(rule), day, southern=southern) == expected


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("last 30 days", PeriodRule("days", 30)),
        ("  Last  1   DAY ", PeriodRule("days", 1)),
        ("last 2 months", PeriodRule("months", 2)),
        ("current season", PeriodRule("current season")),
        ("Previous Season", PeriodRule("previous season")),
    ],
)
def test_rules_parse_and_print(text: str, rule: PeriodRule) -> None:
    assert parse_rule(text) == rule
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize("text", ["last 0 days", "last week", "next season", "30 days", ""])
def test_unknown_rules_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="current season or previous season"):
        parse_rule(text)


def test_the_run_day_is_the_schedules_own() -> None:
    schedule = Schedule(
        "x", "monitor", {"aoi": "a"}, PeriodRule("days", 1), cron="0 0 * * *", timezone="Asia/Tokyo"
    )
    # 23:30 UTC on 29 Feb is 08:30 on 1 March in Tokyo; naive times are UTC.
    assert run_day(schedule, datetime(2024, 2, 29, 23, 30, tzinfo=UTC)) == D(2024, 3, 1)
    assert run_day(schedule, datetime(2024, 2, 29, 14, 59)) == D(2024, 2, 29)
    utc = Schedule("x", "monitor", {"aoi": "a"}, PeriodRule("days", 1), cron="0 0 * * *")
    assert run_day(utc, datetime(2024, 2, 29, 23, 30, tzinfo=UTC)) == D(2024, 2, 29)


def test_next_runs_of_cron_and_interval() -> None:
    windhoek = ZoneInfo("Africa/Windhoek")
    weekly = Schedule(
        "w", "monitor", {}, PeriodRule("days", 30), cron="0 3 * * 1", timezone="Africa/Windhoek"
    )
    after = datetime(2024, 2, 28, 12, tzinfo=UTC)  # a Wednesday
    assert next_runs(weekly, after, 2) == [
        datetime(2024, 3, 4, 3, tzinfo=windhoek),
        datetime(2024, 3, 11, 3, tzinfo=windhoek),
    ]
    anchored = Schedule(
        "i",
        "monitor",
        {},
        PeriodRule("days", 1),
        interval_s=7 * 86400,
        anchor=datetime(2024, 1, 1, 3, tzinfo=UTC),
    )
    assert next_runs(anchored, after) == [datetime(2024, 3, 4, 3, tzinfo=UTC)]
    loose = Schedule("i", "monitor", {}, PeriodRule("days", 1), interval_s=20)
    assert next_runs(loose, after) == [datetime(2024, 2, 28, 12, 0, 20, tzinfo=UTC)]


# --- the shipped file -----------------------------------------------------------------------


def test_the_shipped_schedules() -> None:
    schedules = read_schedules(DEFAULT_SCHEDULES)
    assert [s.name for s in schedules] == ["grootfontein-weekly", "grootfontein-season"]
    weekly, season = schedules
    root = DEFAULT_SCHEDULES.parents[1]
    assert weekly.aoi == root / "aoi" / "grootfontein.geojson"
    assert weekly.parameters["out"] == str(root / "outputs")
    assert (weekly.period, weekly.cron) == (PeriodRule("days", 30), "0 3 * * 1")
    assert season.period == PeriodRule("current season")
    # Grootfontein is south of the equator: its season starts in July.
    spec = spec_for(season, D(2024, 3, 1))
    assert (spec.start, spec.end, spec.source) == (D(2023, 7, 1), D(2024, 2, 29), "demo")
    spec = spec_for(weekly, D(2024, 3, 4))
    assert (spec.start, spec.end, spec.indices) == (D(2024, 2, 3), D(2024, 3, 3), ("ndvi", "evi"))


def test_a_northern_aoi_has_calendar_year_seasons(tmp_path: Path) -> None:
    (tmp_path / "north.geojson").write_text(json.dumps(_square(10.0, 45.0)))
    entry = _entry(period="current season")
    entry["parameters"]["aoi"] = "north.geojson"
    (schedule,) = read_schedules(_write(tmp_path, [entry]))
    spec = spec_for(schedule, D(2024, 3, 1))
    assert (spec.start, spec.end) == (D(2024, 1, 1), D(2024, 2, 29))


def test_entries_round_trip_as_json(tmp_path: Path) -> None:
    entry = _entry(cron=None, interval="20s", anchor="2024-01-01T03:00", timezone="Africa/Windhoek")
    entry["parameters"].update(tile_px=256, indices="ndvi,ndmi", phenology=False)
    (schedule,) = read_schedules(_write(tmp_path, [entry]))
    assert schedule.interval_s == 20
    assert schedule.anchor == datetime(2024, 1, 1, 3, tzinfo=ZoneInfo("Africa/Windhoek"))
    assert schedule.parameters["aoi"] == str(tmp_path / "tiny.geojson")
    data = json.loads(json.dumps(schedule.to_dict()))
    assert Schedule.from_dict(data) == schedule
    spec = spec_for(schedule, D(2024, 3, 1))
    assert (spec.tile_px, spec.indices, spec.phenology) == (256, ("ndvi", "ndmi"), False)
    assert spec.out == tmp_path / "out"


# --- one line per mistake, naming the entry and the fix ------------------------------------

BAD_ENTRIES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown key": (_entry(when="weekly"), "unknown key 'when'"),
    "RunSpec field outside parameters": (_entry(source="demo"), "goes under parameters"),
    "unknown parameter": (
        _entry(parameters={"aoi": "tiny.geojson", "tile_size": 256}),
        "unknown parameter 'tile_size'",
    ),
    "start as parameter": (
        _entry(parameters={"aoi": "tiny.geojson", "start": "2024-01-01"}),
        "set by the period rule",
    ),
    "bad parameter value": (
        _entry(parameters={"aoi": "tiny.geojson", "tile_px": 10}),
        "parameter 'tile_px' 10: input should be greater than or equal to 64",
    ),
    "bad index": (
        _entry(parameters={"aoi": "tiny.geojson", "indices": "ndvi,nope"}),
        "unknown spectral index 'nope'",
    ),
    "no parameters": (_entry(parameters=None), "parameters must be a mapping with at least aoi"),
    "missing AOI": (
        _entry(parameters={"aoi": "nowhere.geojson"}),
        "AOI file",
    ),
    "unknown flow": (_entry(flow="train"), "unknown flow 'train'"),
    "cron of six fields": (_entry(cron="0 0 3 * * 1"), "five fields"),
    "cron out of range": (_entry(cron="61 3 * * 1"), "bad cron expression '61 3 * * 1'"),
    "cron of words": (_entry(cron="every monday"), "bad cron expression"),
    "bad interval unit": (_entry(cron=None, interval="7x"), "bad interval '7x'"),
    "zero interval": (_entry(cron=None, interval=0), "bad interval 0"),
    "negative interval": (_entry(cron=None, interval=-5), "bad interval -5"),
    "both cron and interval": (_entry(interval="7d"), "exactly one of cron"),
    "neither cron nor interval": (_entry(cron=None), "exactly one of cron"),
    "unknown period rule": (_entry(period="last fortnight"), "unknown period rule"),
    "no period rule": (_entry(period=None), "no period rule"),
    "unknown time zone": (_entry(timezone="Mars/Olympus"), "unknown time zone"),
    "anchor on a cron": (_entry(anchor="2024-01-01T03:00"), "anchor is for interval"),
    "bad anchor": (_entry(cron=None, interval="1d", anchor="monday"), "bad anchor"),
}


@pytest.fixture(params=sorted(BAD_ENTRIES))
def bad_entry(request: pytest.FixtureRequest) -> tuple[dict[str, Any], str]:
    entry, needle = BAD_ENTRIES[request.param]
    return json.loads(json.dumps(entry)), needle


def test_every_mistake_is_one_line_naming_the_entry(
    tmp_path: Path, bad_entry: tuple[dict[str, Any], str]
) -> None:
    entry, needle = bad_entry
    path = _write(tmp_path, [entry])
    with pytest.raises(ConfigError) as caught:
        read_schedules(path)
    message = str(caught.value)
    assert "\n" not in message
    assert needle in message
    assert f"schedules file '{path}', entry 'tiny-weekly'" in message
    assert ": " in message.split(needle, 1)[-1] or "use" in message  # it says how to fix it


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, [_entry(), _entry(period="last 3 days")])
    with pytest.raises(ConfigError, match=r"entry 2: the name 'tiny-weekly' is used twice"):
        read_schedules(path)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("schedules: [\n", "is not valid YAML at line"),
        ("schedules:\n  - name: a\n    name: b\n", "is not valid YAML at line 3"),
        ("schedules: []\n", "has no schedules"),
        ("{}", "has no schedules"),
        ("schedules: [1]\nextra: 2\n", "unknown top-level key(s) extra"),
        ("schedules: [1]\n", "entry 1 is not a mapping"),
        ("schedules: [{name: 'a b'}]\n", "entry 1: name 'a b' is missing or not a plain name"),
    ],
)
def test_broken_files_are_one_line(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_schedules(path)
    assert "\n" not in str(caught.value)
    assert needle in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist: give an existing file with --sched"):
        read_schedules(tmp_path / "none.yaml")


# --- the command line -----------------------------------------------------------------------


def test_deployments_lists_the_next_run_and_its_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # AOIs are shown relative to the working folder
    entries = [
        _entry(),
        _entry(name="tiny-season", period="previous season", cron="0 4 1 * *"),
        _entry(name="tiny-often", cron=None, interval=20, anchor="2024-01-01T00:00:00+00:00"),
    ]
    path = _write(tmp_path, entries)
    result = runner.invoke(app, ["deployments", "--schedules", str(path)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    for needle in (
        "tiny-weekly",
        "tiny-season",
        "tiny-often",
        "cron 0 3 * * 1",
        "every 20s",
        "last 10 days",
        "previous season",
        "monitor",
        "tiny.geojson",
    ):
        assert needle in text, needle
    now = datetime.now(UTC)
    (weekly, season, often) = read_schedules(path)
    for schedule in (weekly, season, often):
        moment = next_runs(schedule, now)[0]
        start, end = resolve_period(schedule.period, run_day(schedule, moment), southern=True)
        assert f"{start} to {end}" in text
        if schedule.cron:  # an interval's next run is seconds away: it may tick meanwhile
            assert f"{moment:%Y-%m-%d %H:%M}" in text


def test_deployments_of_a_bad_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = _write(tmp_path, [_entry(period="fortnightly")])
    result = runner.invoke(app, ["deployments", "--schedules", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown period rule 'fortnightly'" in lines[0]


def test_serve_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    path = _write(tmp_path, [_entry()])
    result = runner.invoke(app, ["serve", "--schedules", str(path)], env={"PREFECT_API_URL": ""})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "prefect server start" in lines[0]
    assert "PREFECT_API_URL=http://127.0.0.1:4200/api" in lines[0]
