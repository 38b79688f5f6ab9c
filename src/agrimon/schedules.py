"""Scheduled monitor runs: the schedules file, period rules and the run spec of a run day.

A schedules file (YAML, e.g. ``flows/schedules.yaml``) lists named entries; each says which
flow to run on what parameters, when (a cron expression or an interval) and over which
period (a rule such as ``last 30 days``, resolved on the day each run is scheduled for)::

    schedules:
      - name: grootfontein-weekly
        flow: monitor
        parameters: {aoi: ../aoi/grootfontein.geojson, source: demo, out: ../outputs}
        period: last 30 days
        cron: "0 3 * * 1"
        timezone: Africa/Windhoek

Relative paths in ``parameters`` are relative to the schedules file's folder, so the file
means the same whatever folder ``agrimon serve`` is started in.

Pure library: no Prefect import (``flows/deployments.py`` turns entries into deployments).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from agrimon.config import RunSpec
from agrimon.errors import AgrimonError, ConfigError

#: The shipped example, beside the flows that serve it.
DEFAULT_SCHEDULES = Path(__file__).resolve().parents[2] / "flows" / "schedules.yaml"
#: Flows an entry may name.
FLOWS = ("monitor",)
#: Keys of an entry (``timezone`` and ``anchor`` optional, one of ``cron`` and ``interval``).
ENTRY_KEYS = ("name", "flow", "parameters", "period", "cron", "interval", "timezone", "anchor")
#: RunSpec fields an entry's parameters may not set: the period rule sets them.
PERIOD_FIELDS = ("start", "end")
#: Parameters holding a path (resolved against the schedules file's folder).
PATH_FIELDS = ("aoi", "out", "reference", "fields", "compare")
#: Model parameters: a path, or one of these words.
MODEL_FIELDS = ("invasive_model", "yield_model")
MODEL_WORDS = ("auto", "none")
#: Source settings holding a path.
SETTINGS_PATH_FIELDS = ("local_path", "cache_dir")
#: First month of a season: July in the south (dry season, then the rains from sowing to
#: harvest), January in the north; the same calendar as ``agrimon.monitor.phenology_params``.
SEASON_START_MONTH = {True: 7, False: 1}

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LAST = re.compile(r"^last\s+(\d+)\s+(day|days|month|months)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RULE_HELP = "last N days, last N months, current season or previous season"
#: Most values (mappings, lists and scalars, aliases counted as often as they are used) a
#: schedules file may hold: a real one holds hundreds; YAML aliases could make a small file
#: expand to billions ("billion laughs"), which the checks would then walk.
MAX_SCHEDULE_VALUES = 100_000

RuleKind = Literal["days", "months", "current season", "previous season"]


@dataclass(frozen=True)
class PeriodRule:
    """Which period a run covers, relative to the day it is scheduled for.

    Attributes:
        kind: ``days`` or ``months`` (the last ``n`` of them, up to the day before the run
            day), ``current season`` (from the season's first day to the day before) or
            ``previous season`` (the last complete season).
        n: How many days or months (``days`` and ``months`` only; else 0).
    """

    kind: RuleKind
    n: int = 0

    def __str__(self) -> str:
        if self.kind in ("days", "months"):
            unit = self.kind if self.n != 1 else self.kind[:-1]
            return f"last {self.n} {unit}"
        return self.kind

    @property
    def seasonal(self) -> bool:
        """Whether the period depends on the AOI's hemisphere."""
        return self.kind in ("current season", "previous season")


@dataclass(frozen=True)
class Schedule:
    """One entry of a schedules file, validated.

    Attributes:
        name: Unique name; the Prefect deployment's name.
        flow: The flow to run (``monitor``).
        parameters: RunSpec fields (but ``start`` and ``end``), paths made absolute.
        period: The period rule.
        cron: Cron expression (five fields), or None for an interval schedule.
        interval_s: Seconds between runs, or None for a cron schedule.
        timezone: IANA time zone of the cron expression and of the run day; None is UTC.
        anchor: When an interval schedule's runs are counted from (None: when it is served).
        file: The schedules file it comes from (in messages).
    """

    name: str
    flow: str
    parameters: Mapping[str, Any]
    period: PeriodRule
    cron: str | None = None
    interval_s: float | None = None
    timezone: str | None = None
    anchor: datetime | None = None
    file: Path = field(default=Path("schedules.yaml"), compare=False)

    @property
    def aoi(self) -> Path:
        """The AOI file."""
        return Path(self.parameters["aoi"])

    @property
    def zone(self) -> ZoneInfo:
        """The time zone of the schedule and its run days."""
        return ZoneInfo(self.timezone or "UTC")

    def describe_when(self) -> str:
        """The schedule in words: ``cron 0 3 * * 1 (Africa/Windhoek)``, ``every 7d``."""
        if self.cron is not None:
            text = f"cron {self.cron}"
        else:
            assert self.interval_s is not None
            text = f"every {format_interval(self.interval_s)}"
        return f"{text} ({self.timezone})" if self.timezone else text

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-serialisable values (a flow parameter); inverse of from_dict."""
        return {
            "name": self.name,
            "flow": self.flow,
            "parameters": dict(self.parameters),
            "period": str(self.period),
            "cron": self.cron,
            "interval": self.interval_s,
            "timezone": self.timezone,
            "anchor": self.anchor.isoformat() if self.anchor else None,
            "file": str(self.file),
        }

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> Schedule:
        """Rebuild (and validate again) an entry written by :meth:`to_dict`."""
        file = Path(str(entry.get("file", "schedules.yaml")))
        raw = {k: v for k, v in entry.items() if k != "file" and v is not None}
        return _entry(raw, file=file, base=file.parent, index=0)


def read_schedules(path: Path) -> list[Schedule]:
    """Read and validate a schedules file.

    Args:
        path: YAML file with a list ``schedules`` of entries (or a bare list).

    Returns:
        The entries, in file order.

    Raises:
        ConfigError: One line naming the file, the entry and the fix: the file is missing or
            not YAML, an unknown key or RunSpec field, an invalid parameter, a bad cron
            expression, interval or time zone, an unknown period rule, a missing AOI file,
            or two entries of the same name.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"schedules file '{path}' does not exist: give an existing file with --schedules"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"schedules file '{path}' cannot be read ({err}): fix it") from err
    try:
        # ruamel (typed, a Prefect dependency) also refuses a key given twice in a mapping.
        loaded = YAML(typ="safe", pure=True).load(text)
    except RecursionError:
        raise ConfigError(
            f"schedules file '{path}' is nested too deeply to be a schedules file: fix it"
        ) from None
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        what = str(getattr(err, "problem", None) or "syntax error").strip()
        raise ConfigError(
            f"schedules file '{path}' is not valid YAML{where} ({what}): fix it"
        ) from None
    values = _expanded_values(loaded)
    if values is None:
        raise ConfigError(
            f"schedules file '{path}' holds a value that contains itself (a YAML alias "
            "inside its own anchor): write the values out"
        )
    if values > MAX_SCHEDULE_VALUES:
        raise ConfigError(
            f"schedules file '{path}' expands to {values:,} values (YAML aliases count each "
            f"time they are used), more than the {MAX_SCHEDULE_VALUES:,} a schedules file "
            "may hold: write the values out"
        )
    entries = loaded.get("schedules") if isinstance(loaded, dict) else loaded
    if isinstance(loaded, dict) and set(loaded) - {"schedules"}:
        extra = sorted(str(k) for k in set(loaded) - {"schedules"})
        raise ConfigError(
            f"schedules file '{path}': unknown top-level key(s) {', '.join(extra)}: "
            "the file holds one list, 'schedules'"
        )
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"schedules file '{path}' has no schedules: give a list 'schedules' of entries "
            "with name, flow, parameters, period and cron or interval"
        )
    schedules: list[Schedule] = []
    seen: set[str] = set()
    for index, raw in enumerate(entries):
        schedule = _entry(raw, file=path, base=path.parent, index=index)
        if schedule.name in seen:
            raise ConfigError(
                f"schedules file '{path}', entry {index + 1}: the name '{schedule.name}' is "
                "used twice: give every entry its own name"
            )
        seen.add(schedule.name)
        schedules.append(schedule)
    return schedules


def _expanded_values(document: object) -> int | None:
    """How many values ``document`` holds with every alias expanded, or None for a cycle.

    Counted without expanding anything: each mapping or list once, its size remembered, so
    a file of nested aliases costs the time of its own length.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[object, bool]] = [(document, False)]
    while stack:
        node, done = stack.pop()
        if not isinstance(node, dict | list):
            continue
        key = id(node)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(
                sizes[id(c)] if isinstance(c, dict | list) else 1 for c in children
            )
            continue
        if key in sizes:
            continue
        if key in on_path:
            return None
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, dict | list))
    return sizes.get(id(document), 1)


def parse_rule(text: str) -> PeriodRule:
    """Parse a period rule (``last 30 days``, ``current season``, …).

    Raises:
        ValueError: Not a rule; the message lists the rules.
    """
    words = " ".join(str(text).lower().split())
    if words == "current season":
        return PeriodRule("current season")
    if words == "previous season":
        return PeriodRule("previous season")
    match = _LAST.match(words)
    if match and int(match.group(1)) > 0:
        kind: RuleKind = "days" if match.group(2).startswith("day") else "months"
        return PeriodRule(kind, int(match.group(1)))
    raise ValueError(f"unknown period rule {text!r}: use {RULE_HELP}")


def resolve_period(rule: PeriodRule, day: date, *, southern: bool) -> tuple[date, date]:
    """The period a run scheduled for ``day`` covers (both days inclusive).

    Every period ends on the day before the run day at the latest: a run at 03:00 has
    no complete scenes of its own day.

    * ``last N days``: ``day − N`` to ``day − 1``.
    * ``last N months``: the same day of the month N months earlier (the month's last day
      when it has no such day) to ``day − 1``; run on the 1st, it is N whole months.
    * ``current season``: from the first day of the season holding ``day − 1`` to
      ``day − 1``. Seasons run July–June in the southern hemisphere and January–December
      in the north; a run on the season's first day covers the whole season just ended
      (the new one has no day yet).
    * ``previous season``: the last complete season, the one before the season holding
      ``day``.

    Args:
        rule: The period rule.
        day: The day the run is scheduled for (in the schedule's time zone).
        southern: Whether the AOI is in the southern hemisphere (seasonal rules only).

    Returns:
        The first and last day.
    """
    end = day - timedelta(days=1)
    if rule.kind == "days":
        return day - timedelta(days=rule.n), end
    if rule.kind == "months":
        return _months_before(day, rule.n), end
    month = SEASON_START_MONTH[southern]
    if rule.kind == "current season":
        return season_start(end, month), end
    this = season_start(day, month)
    previous = date(this.year - 1, this.month, 1)
    return previous, this - timedelta(days=1)


def season_start(day: date, month: int) -> date:
    """First day of the season (starting on the 1st of ``month``) that holds ``day``."""
    year = day.year if day.month >= month else day.year - 1
    return date(year, month, 1)


def run_day(schedule: Schedule, when: datetime) -> date:
    """The day a run scheduled at ``when`` is for, in the schedule's time zone.

    A naive ``when`` is taken as UTC (as Prefect's times are).
    """
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return aware.astimezone(schedule.zone).date()


def is_southern(aoi: Path) -> bool:
    """Whether the AOI's centroid is south of the equator (the equator counts as north).

    Raises:
        AoiError: The AOI cannot be read (one line).
    """
    from agrimon.aoi import read_aoi  # geopandas: only when a season rule needs it

    return bool(read_aoi(aoi).geometry.centroid.y < 0)


def spec_for(schedule: Schedule, day: date, *, southern: bool | None = None) -> RunSpec:
    """The run spec of the run scheduled for ``day``.

    Args:
        schedule: The entry.
        day: The run day (see :func:`run_day`).
        southern: The AOI's hemisphere, if known; read from the AOI for seasonal rules.

    Returns:
        The run's :class:`~agrimon.config.RunSpec`.

    Raises:
        ConfigError: A parameter is invalid (one line naming the entry).
        AoiError: A seasonal rule and an AOI that cannot be read.
    """
    if southern is None:
        southern = is_southern(schedule.aoi) if schedule.period.seasonal else True
    start, end = resolve_period(schedule.period, day, southern=southern)
    return _make_spec(schedule.parameters, start, end, where=_where(schedule.file, schedule.name))


def next_runs(schedule: Schedule, after: datetime, count: int = 1) -> list[datetime]:
    """The next ``count`` times the schedule fires after ``after`` (aware, schedule's zone).

    Interval schedules without an anchor count from when they are served: from ``after``.
    """
    zone = schedule.zone
    aware = after if after.tzinfo is not None else after.replace(tzinfo=UTC)
    local = aware.astimezone(zone)
    if schedule.cron is not None:
        sim = CronSim(schedule.cron, local)
        return [next(sim) for _ in range(count)]
    assert schedule.interval_s is not None
    step = timedelta(seconds=schedule.interval_s)
    anchor = (schedule.anchor or aware).astimezone(zone)
    if anchor <= local:  # the first run after `after`, counted from the anchor
        anchor += step * ((local - anchor) // step + 1)
    return [anchor + step * i for i in range(count)]


def format_interval(seconds: float) -> str:
    """``604800`` is ``7d``, ``90`` is ``90s``: the largest unit that divides it."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNIT_S[unit] and seconds % _UNIT_S[unit] == 0:
            return f"{int(seconds // _UNIT_S[unit])}{unit}"
    return f"{seconds:g}s"


# --- validation -----------------------------------------------------------------------------


def _where(file: Path, name: str | int) -> str:
    entry = f"entry '{name}'" if isinstance(name, str) else f"entry {name}"
    return f"schedules file '{file}', {entry}"


def _entry(raw: object, *, file: Path, base: Path, index: int) -> Schedule:
    """Validate one entry; every error is one line naming the file and the entry."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{_where(file, index + 1)} is not a mapping: give name, flow, parameters, "
            "period and cron or interval"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{_where(file, index + 1)}: name {name!r} is missing or not a plain name: give "
            "letters, digits, '-', '_' or '.', e.g. name: grootfontein-weekly"
        )
    where = _where(file, name)
    unknown = [str(k) for k in raw if k not in ENTRY_KEYS]
    if unknown:
        hint = (
            f" (a RunSpec field goes under parameters: {unknown[0]}: …)"
            if unknown[0] in _spec_fields()
            else ""
        )
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'{hint}: use {', '.join(ENTRY_KEYS)}")
    flow = raw.get("flow", "monitor")
    if flow not in FLOWS:
        raise ConfigError(f"{where}: unknown flow {flow!r}: use {', '.join(FLOWS)}")
    parameters = _parameters(raw.get("parameters"), base=base, where=where)
    if "period" not in raw:
        raise ConfigError(f"{where}: no period rule: add period: one of {RULE_HELP}")
    try:
        rule = parse_rule(str(raw["period"]))
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    timezone = _timezone(raw.get("timezone"), where)
    cron, interval_s = raw.get("cron"), raw.get("interval")
    if (cron is None) == (interval_s is None):
        raise ConfigError(
            f'{where}: give exactly one of cron (e.g. cron: "0 3 * * 1") and interval '
            "(e.g. interval: 7d)"
        )
    anchor = _anchor(raw.get("anchor"), where, timezone)
    if cron is not None:
        cron = _cron(cron, where)
        if anchor is not None:
            raise ConfigError(f"{where}: anchor is for interval schedules: remove it")
    seconds = _interval(interval_s, where) if interval_s is not None else None
    schedule = Schedule(
        name=name,
        flow=str(flow),
        parameters=parameters,
        period=rule,
        cron=cron,
        interval_s=seconds,
        timezone=timezone,
        anchor=anchor,
        file=file,
    )
    # The parameters as a spec, on a stand-in period: a bad value is found now, not at 03:00.
    today = datetime.now(UTC).date()
    _make_spec(parameters, *resolve_period(rule, today, southern=True), where=where)
    return schedule


def _parameters(raw: object, *, base: Path, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or "aoi" not in raw:
        raise ConfigError(
            f"{where}: parameters must be a mapping with at least aoi, e.g. parameters: "
            "{aoi: aoi/my_area.geojson, source: demo}"
        )
    fields = _spec_fields()
    for key in raw:
        if key in PERIOD_FIELDS:
            raise ConfigError(
                f"{where}: parameter '{key}' is set by the period rule: remove it and choose "
                f"the period with period: ({RULE_HELP})"
            )
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown parameter '{key}': use RunSpec fields "
                f"({', '.join(f for f in fields if f not in PERIOD_FIELDS)})"
            )
    params: dict[str, Any] = dict(raw)
    for key in PATH_FIELDS:
        if params.get(key) is not None:
            params[key] = str(_resolve(base, params[key]))
    for key in MODEL_FIELDS:
        value = params.get(key)
        if value is not None and str(value).lower() not in MODEL_WORDS:
            params[key] = str(_resolve(base, value))
    settings = params.get("source_settings")
    if isinstance(settings, dict):
        params["source_settings"] = {
            k: (str(_resolve(base, v)) if k in SETTINGS_PATH_FIELDS and v is not None else v)
            for k, v in settings.items()
        }
    aoi = Path(params["aoi"])
    if not aoi.is_file():
        raise ConfigError(
            f"{where}: AOI file '{aoi}' does not exist: fix parameters.aoi (relative paths "
            f"are relative to the schedules file's folder, {base})"
        )
    return params


def _resolve(base: Path, value: object) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _make_spec(params: Mapping[str, Any], start: date, end: date, *, where: str) -> RunSpec:
    """The RunSpec; a bad value is one line naming its key in the file (not a CLI flag)."""
    try:
        return RunSpec.model_validate({**params, "start": start, "end": end})
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"] if isinstance(p, str)) or "parameters"
        msg = str(first["msg"]).removeprefix("Value error, ")
        value = first.get("input")
        shown = "" if isinstance(value, dict | list) else f" {value!r}"
        raise ConfigError(
            f"{where}: parameter '{key}'{shown}: {msg[:1].lower() + msg[1:]}: fix it under "
            "parameters"
        ) from None
    except AgrimonError as err:  # raised by a field's own check (e.g. an unknown index)
        raise ConfigError(f"{where}: {err}") from None


def _spec_fields() -> tuple[str, ...]:
    return tuple(RunSpec.model_fields)


def _cron(value: object, where: str) -> str:
    text = " ".join(str(value).split())
    problem = None
    if len(text.split()) != 5:
        problem = "it needs five fields (minute hour day-of-month month day-of-week)"
    else:
        try:
            CronSim(text, datetime(2000, 1, 1))
        except CronSimError as err:
            problem = str(err).lower()
    if problem:
        raise ConfigError(
            f'{where}: bad cron expression {text!r} ({problem}): write e.g. cron: "0 3 * * 1" '
            "(Mondays at 03:00)"
        )
    return text


def _interval(value: object, where: str) -> float:
    match = _INTERVAL.match(str(value)) if not isinstance(value, bool) else None
    seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"] if match else 0.0
    if seconds < 1:
        raise ConfigError(
            f"{where}: bad interval {value!r}: give seconds or a number with a unit "
            "(s, m, h, d, w), e.g. interval: 7d"
        )
    return seconds


def _timezone(value: object, where: str) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: unknown time zone {value!r}: give an IANA name, e.g. "
            "timezone: Africa/Windhoek"
        ) from None
    return str(value)


def _anchor(value: object, where: str, timezone: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(
            f"{where}: bad anchor {value!r}: give a date and time, e.g. anchor: 2024-01-01T03:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone or "UTC"))
    return moment


def _months_before(day: date, n: int) -> date:
    """The same day of the month ``n`` months before ``day`` (clamped to the month's end)."""
    months = day.year * 12 + day.month - 1 - n
    year, month = divmod(months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))
