"""Security: no credential in anything a run writes; nothing agrimon reads runs code or escapes.

* One full run through the real ``agrimon run``, against the Sentinel Hub loopback fake,
  makes every product type (invasive map from a checkpoint, phenology, zonal tables, yield
  forecast, area products, report, STAC catalog, QGIS project, Prefect artifacts); a second
  run has its credentials rejected mid-flow. Every byte both wrote (products, cache, the
  Prefect database, logs, stdout and stderr) is searched for the client secret, the other
  secrets in the environment and the access tokens the fake issued.
* The code: every ``torch.load`` is weights-only, no shell, YAML loaded safely (static scans);
  a checkpoint that would run code, or does not match its card, is refused in one line.
* Inputs: KML entities (external, parameter, billion laughs) and NetworkLinks neither expand
  nor reach the network; a schedules file with Python tags, aliases that expand to billions
  or a self-reference is refused in one line; names of AOIs, zones and fields never make a
  path outside the output folder.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import functools
import gzip
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
import torch
from flows.api import TemporaryApi
from flows.monitor import RESULTS_FOLDER, artifact_key
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect.types.names import raise_on_name_alphanumeric_dashes_only
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry
from typer.testing import CliRunner

from agrimon import aoi as aoi_module
from agrimon.aoi import _slug, read_aoi
from agrimon.checkpoint import CARD_JSON, CHECKPOINT, load_verified, write_checkpoint
from agrimon.cli import app
from agrimon.config import make_spec
from agrimon.errors import AgrimonError, ConfigError, ModelError
from agrimon.invasive.card import FORMAT as INVASIVE_FORMAT
from agrimon.invasive.card import load_checkpoint
from agrimon.products.layers import run_stem
from agrimon.products.workspace import WORK_SUFFIX
from agrimon.schedules import read_schedules
from agrimon.yieldcast.forecast import FORMAT as YIELD_FORMAT
from agrimon.yieldcast.forecast import load_model
from agrimon.yieldcast.products import forecast_units

from ..conftest import real_path, slovenia_aoi
from ..fakes.base import FakeServer
from ..fakes.sentinelhub_api import CLIENT_ID, PROCESS_PATH, fake_sentinelhub, token_url
from ..test_cli_run import _env, _run
from .corpus import collection, feature, polygon, ring, schedules

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

# --- one full run and one rejected run, everything they wrote --------------------------

#: The Sentinel Hub client secret of the runs: given on the command line and in the
#: environment (the rejected run uses the environment's).
SECRET = "sh-secret-Vq7Lm2Xc4RtB9"
#: Credentials of other services a user may have in the environment.
ENV_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAQ7SECURITYTEST01",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-Jd93kLq0Zx8Pw",
    "AWS_SESSION_TOKEN": "aws-session-Rt5Yu8Io2Pa",
    "PC_SDK_SUBSCRIPTION_KEY": "pc-key-Mn4Bv6Cx1Zs",
}
PERIOD = "2015-01-01_2015-12-31"  # a whole northern season: the invasive features need one
SCRIPT = "<script>alert('zone')</script> & co"


def _zone_names(root: Path) -> list[str]:
    """Names that would land in ``escape`` folders if one became a path."""
    return [
        "farm",
        f"{root}/escape/absolute",
        "../../escape/up",
        "..",
        "C:\\escape\\windows",
        "a\nb\x01c\x1b[31m",
        SCRIPT,
        "ünï 農場 \u202etxt.exe",
    ]


def _field_names(root: Path) -> list[str]:
    return ["..", f"{root}/escape/field"]


def _features(names: list[str], boxes: list[BaseGeometry]) -> str:
    items = [
        {"type": "Feature", "properties": {"name": n}, "geometry": mapping(g)}
        for n, g in zip(names, boxes, strict=True)
    ]
    return json.dumps({"type": "FeatureCollection", "features": items})


def _inputs(root: Path) -> tuple[Path, Path]:
    """The AOI (zones of hostile names over the real scenes) and the fields file."""
    whole = slovenia_aoi()
    west, south, east, north = whole.bounds
    mid = (west + east) / 2
    names = _zone_names(root)
    strips = len(names) - 1  # the whole AOI, then strips side by side
    step = (east - west) / strips
    boxes = [
        whole,
        *(box(west + i * step, south, west + i * step + step, north) for i in range(strips)),
    ]
    aoi = root / "lj.geojson"
    aoi.write_text(_features(names, boxes), encoding="utf-8")
    fields = root / "fields.geojson"
    halves = [box(west, south, mid, north), box(mid, south, east, north)]
    fields.write_text(_features(_field_names(root), halves), encoding="utf-8")
    return aoi, fields


@dataclass(frozen=True)
class Runs:
    """What the two runs left: their processes, folders and a copy of Prefect's database."""

    root: Path
    full: subprocess.CompletedProcess[str]
    rejected: subprocess.CompletedProcess[str]
    folder: Path
    database: Path
    tokens: frozenset[str]


def _sh_args(server: FakeServer, root: Path, aoi: Path, name: str) -> list[str]:
    """``agrimon run`` of the AOI against the fake, its cache and products named ``name``."""
    options = {
        "--source": "sentinelhub",
        "--sh-base-url": server.url,
        "--sh-token-url": token_url(server),
        "--level": "l1c",
        "--max-cloud": "100",
        "--tile-px": "64",
        "--start": "2015-01-01",
        "--end": "2015-12-31",
        "--cache-dir": str(root / f"cache-{name}"),
        "--out": str(root / f"out-{name}"),
    }
    return ["run", str(aoi), *(part for pair in options.items() for part in pair), "--verbose"]


def _query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as con:
        return con.execute(sql).fetchall()


def _settled(database: Path, timeout: float = 30.0) -> None:
    """Wait until the server has stored both flow runs' final states and the artifacts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {r[0] for r in _query(database, "SELECT state_type FROM flow_run")}
        artifacts = _query(database, "SELECT count(*) FROM artifact")[0][0]
        if states == {"COMPLETED", "FAILED"} and artifacts >= 2:
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """A full run with every product type, then a run whose credentials are rejected.

    Both talk to one Prefect server started here (a :class:`TemporaryApi`, as the command
    line starts its own), so that its database outlives the runs and can be searched.
    """
    real_path("slovenia-s2", "scenes")
    root = tmp_path_factory.mktemp("security")
    aoi, fields = _inputs(root)
    home = root / "prefect"
    api = TemporaryApi(home)
    api.start()
    try:
        url = api.wait()
        with fake_sentinelhub(client_secret=SECRET) as server:
            env = _env(
                home,
                PREFECT_API_URL=url,
                # The most a user could ask the logs to say: debug, HTTP and OAuth included.
                PREFECT_LOGGING_LEVEL="DEBUG",
                PREFECT_LOGGING_EXTRA_LOGGERS="agrimon,sentinelhub,requests_oauthlib,oauthlib,urllib3",
                NO_PROXY="127.0.0.1,localhost",
                OAUTHLIB_INSECURE_TRANSPORT="1",  # the fake's token URL is plain http
                XDG_CONFIG_HOME=str(root / "xdg"),
                SH_CLIENT_ID=CLIENT_ID,
                SH_CLIENT_SECRET=SECRET,
                **ENV_SECRETS,
            )
            products = [
                *("--invasive-model", str(ROOT / "models" / "invasive-demo")),
                *("--yield-model", str(ROOT / "models" / "yield-demo" / CHECKPOINT)),
                *("--fields", str(fields)),
            ]
            full = _run(
                [
                    *_sh_args(server, root, aoi, "full"),
                    *("--sh-client-id", CLIENT_ID, "--sh-client-secret", SECRET),
                    *products,
                ],
                env,
                timeout=400,
            )
            # The same run again, its credentials revoked half-way: the first half of its
            # pixel requests are answered (a "slow" fault of no delay), then each is a 401.
            half = server.count(PROCESS_PATH) // 2
            server.inject(PROCESS_PATH, "slow", times=half, delay_s=0)
            server.inject(PROCESS_PATH, "401", times=10_000)
            rejected = _run([*_sh_args(server, root, aoi, "rejected"), *products], env, timeout=300)
            tokens = frozenset(server.state["tokens"])
        database = api.database
        _settled(database)
        # Prefect's files as the server left them, and one consistent copy to query.
        keep = root / "prefect-database"
        keep.mkdir()
        for path in api.folder.glob(f"{api.run_id}*"):
            shutil.copy2(path, keep / path.name)
        with (
            sqlite3.connect(f"file:{database}?mode=ro", uri=True) as live,
            sqlite3.connect(keep / "snapshot.db") as copy,
        ):
            live.backup(copy)
    finally:
        api.stop()
    folder = root / "out-full" / "lj" / PERIOD
    return Runs(root, full, rejected, folder, keep / "snapshot.db", tokens)


_BASE64 = re.compile(rb"[A-Za-z0-9+/]{64,}={0,2}")


def _contents(path: Path) -> bytes:
    """A file's bytes, and what its encoded parts hold (base64, a .qgz, gzip, Parquet).

    Prefect stores its pickled results base64-encoded, a file of its own or a JSON field.
    """
    raw = path.read_bytes()
    parts = [raw]
    for encoded in [b"".join(raw.split()), *_BASE64.findall(raw)]:
        with contextlib.suppress(ValueError):
            parts.append(base64.b64decode(encoded, validate=True))
    if raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as archive:
            parts += [archive.read(name) for name in archive.namelist()]
    if raw[:2] == b"\x1f\x8b":
        parts.append(gzip.decompress(raw))
    if path.suffix == ".parquet":
        parts.append(pd.read_parquet(path).to_csv().encode())
    return b"\n".join(parts)


def _dump(database: Path) -> str:
    """Every row of every table of a SQLite database, as text."""
    tables = [r[0] for r in _query(database, "SELECT name FROM sqlite_master WHERE type='table'")]
    return "\n".join(repr(row) for t in tables for row in _query(database, f'SELECT * FROM "{t}"'))


def _needles(tokens: frozenset[str]) -> dict[str, bytes]:
    """Each credential, and the forms an HTTP library would send it in."""
    values = {"client secret": SECRET, **ENV_SECRETS}
    needles = {name: value.encode() for name, value in values.items()}
    needles["basic auth"] = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode())
    needles["secret, base64"] = base64.b64encode(SECRET.encode()).rstrip(b"=")
    for i, token in enumerate(sorted(tokens)):
        needles[f"access token {i}"] = token.encode()
        needles[f"access token {i} signature"] = token.rsplit(".", 1)[-1].encode()
    return needles


@pytest.mark.slow
def test_no_credential_in_anything_either_run_wrote(runs: Runs) -> None:
    assert runs.full.returncode == 0, runs.full.stderr[-3000:]
    assert runs.tokens  # the fake issued tokens: they are credentials too
    needles = _needles(runs.tokens)
    found: dict[str, list[str]] = {}
    files = [p for p in runs.root.rglob("*") if p.is_file()]
    for path in files:
        data = _contents(path)
        for name, needle in needles.items():
            if needle in data:
                found.setdefault(str(path.relative_to(runs.root)), []).append(name)
    texts = {
        "full run stdout": runs.full.stdout,
        "full run stderr": runs.full.stderr,
        "rejected run stdout": runs.rejected.stdout,
        "rejected run stderr": runs.rejected.stderr,
        "Prefect database rows": _dump(runs.database),
    }
    for where, text in texts.items():
        for name, needle in needles.items():
            if needle.decode() in text:
                found.setdefault(where, []).append(name)
    assert found == {}
    assert len(files) > 100


@pytest.mark.slow
def test_the_search_covers_every_product_type_the_cache_and_prefect(runs: Runs) -> None:
    """What the search above read: it would have seen a secret in any of these."""
    folder = runs.folder
    assert runs.full.stdout.strip().splitlines()[-1] == str(folder)
    for name in (
        "manifest.json",
        "catalog.json",
        "report.html",
        "invasive_class.tif",
        "invasive_probability.tif",
        "invasive_polygons.geojson",
        "invasive_map_areas.csv",
        "ndvi_peak_doy.tif",
        "ndvi_season_length.tif",
        "zonal_stats.csv",
        "zonal_stats.parquet",
        "yield_forecast.csv",
        "yield_forecast.geojson",
        f"lj_{PERIOD}.gpkg",
        f"lj_{PERIOD}.qgz",
    ):
        assert (folder / name).stat().st_size > 0, name
    items = list(folder.glob("*/*.json"))
    assert len(items) >= 2  # the STAC items beside the catalog
    manifest = json.loads((folder / "manifest.json").read_text())
    # The secret was in the run's parameters, and is masked where they are written.
    assert manifest["parameters"]["source_settings"]["sh_client_secret"] == "**********"
    assert manifest["source"]["credentials"].endswith("(set, from settings), secret ****")
    assert [m["task"] for m in manifest["models"]] == ["invasive", "yield"]
    cached = [p for p in (runs.root / "cache-full").rglob("*.bin")]
    assert cached and all(p.read_bytes().startswith(b"agrimon-cache-1") for p in cached)
    # Prefect's database: both flow runs, their parameters, logs, exceptions, artifacts.
    db = runs.database
    states = sorted(r[0] for r in _query(db, "SELECT state_type FROM flow_run"))
    assert states == ["COMPLETED", "FAILED"]
    given = {  # the full run had the secret on its command line, the other in the environment
        state: json.loads(params)["spec"]["source_settings"]["sh_client_secret"]
        for state, params in _query(db, "SELECT state_type, parameters FROM flow_run")
    }
    assert given == {"COMPLETED": "**********", "FAILED": None}
    artifacts = dict(_query(db, "SELECT key, data FROM artifact WHERE key IS NOT NULL"))
    assert set(artifacts) == {"agrimon-lj", "agrimon-lj-report"}
    # The failed flow's exception, pickled by Prefect into PREFECT_HOME: searched as well.
    results = [json.loads(r[0]) for r in _query(db, "SELECT data FROM artifact WHERE key IS NULL")]
    stored = [Path(r["storage_key"]) for r in results]
    assert stored and all(p.is_relative_to(runs.root / "prefect") for p in stored)
    assert any(b"rejected the credentials" in _contents(p) for p in stored)
    summary = json.loads(artifacts["agrimon-lj"])
    assert summary.startswith("# lj: 2015-01-01 to 2015-12-31\n\n6 tiles, 5 scenes, source ")
    logs = "\n".join(r[0] for r in _query(db, "SELECT message FROM log"))
    assert "computed 6 of 6 tiles" in logs
    assert "rejected the credentials" in _dump(db)  # the failed run's exception
    # The raw files hold what the tables hold: the byte search saw the artifact too.
    raw = b"".join(p.read_bytes() for p in db.parent.glob("run-*.db*"))
    assert summary.splitlines()[0].encode() in raw
    assert b"rejected the credentials" in raw


@pytest.mark.slow
def test_a_run_whose_credentials_are_rejected_midway_fails_in_one_line(runs: Runs) -> None:
    proc = runs.rejected
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "rejected the credentials (HTTP 401)" in errors[0]
    assert "Traceback" not in proc.stderr
    aoi_folder = runs.root / "out-rejected" / "lj"
    assert not (aoi_folder / PERIOD).exists()
    # The tiles finished before the 401s are kept for a rerun, Prefect's results with them.
    work = aoi_folder / f".{PERIOD}{WORK_SUFFIX}"
    assert [p.name for p in work.glob("tiles/*")] != []
    assert [p.name for p in (work / RESULTS_FOLDER).iterdir()] != []


@pytest.mark.slow
def test_hostile_zone_and_field_names_stay_data_inside_the_output_folder(runs: Runs) -> None:
    root = runs.root
    tops = {p.name for p in root.iterdir()}
    made = {"prefect", "prefect-database", "cache-full", "cache-rejected", "out-full"}
    made |= {"out-rejected", "lj.geojson", "fields.geojson"}
    assert made <= tops and tops - made <= {"xdg"}
    assert [p for p in root.rglob("*") if "escape" in p.name] == []
    assert not (root.parent / "escape").exists() and not (root.parent.parent / "escape").exists()
    for out in ("out-full", "out-rejected"):
        inside = (root / out / "lj").resolve()
        assert all(p.resolve().is_relative_to(inside) for p in (root / out).rglob("*"))
    # The names are kept as given, as data.
    zones = gpd.read_file(runs.folder / f"lj_{PERIOD}.gpkg", layer="zones")
    assert sorted(zones["name"]) == sorted(_zone_names(root))
    forecast = pd.read_csv(runs.folder / "yield_forecast.csv", keep_default_na=False)
    assert sorted(forecast["unit"]) == sorted(_field_names(root))
    # And shown as text in the report, never run as markup.
    report = (runs.folder / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(" not in report
    assert "&lt;script&gt;alert(" in report


# --- the code: static scans -------------------------------------------------------------

CODE = ("src/agrimon", "flows", "bench")


@functools.cache
def _calls() -> tuple[tuple[str, ast.Call], ...]:
    """Every call in the project's code, with ``file:line``."""
    found = []
    for folder in CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            where = path.relative_to(ROOT)
            found += [(f"{where}:{n.lineno}", n) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    return tuple(found)


def _dotted(node: ast.expr) -> str:
    """``torch.load`` for ``torch.load(...)``'s function; ``().eval`` for ``f().eval()``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "()")
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_every_checkpoint_load_is_weights_only_and_nothing_unpickles() -> None:
    loads = [(where, c) for where, c in _calls() if _dotted(c.func) == "torch.load"]
    assert [w for w, _ in loads] == ["src/agrimon/checkpoint.py:97"]
    assert all(_is_constant(_keyword(c, "weights_only"), True) for _, c in loads)
    unsafe = {
        "pickle.load",
        "pickle.loads",
        "cloudpickle.load",
        "cloudpickle.loads",
        "dill.load",
        "dill.loads",
        "joblib.load",
        "marshal.load",
        "marshal.loads",
        "shelve.open",
        "torch.jit.load",
        "eval",
        "exec",
    }
    assert [w for w, c in _calls() if _dotted(c.func) in unsafe] == []
    numpy_loads = [(w, c) for w, c in _calls() if _dotted(c.func) == "np.load"]
    assert len(numpy_loads) >= 2
    # numpy's default is allow_pickle=False: only an explicit other value could unpickle.
    explicit = [(w, c) for w, c in numpy_loads if _keyword(c, "allow_pickle") is not None]
    assert [w for w, c in explicit if not _allows_no_pickle(c)] == []


def _allows_no_pickle(call: ast.Call) -> bool:
    return _is_constant(_keyword(call, "allow_pickle"), False)


def test_nothing_runs_a_shell() -> None:
    calls = _calls()
    assert [w for w, c in calls if c.keywords and not _shell_off(c)] == []
    shells = {
        "os.system",
        "os.popen",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "asyncio.create_subprocess_shell",
    }
    spawned = [w for w, c in calls if _dotted(c.func).startswith(("os.exec", "os.spawn"))]
    assert [w for w, c in calls if _dotted(c.func) in shells] + spawned == []
    # The scan sees the processes agrimon does start (an argument list each, no shell).
    started = [c for _, c in calls if _dotted(c.func) in ("subprocess.run", "subprocess.Popen")]
    assert len(started) >= 2
    assert all(isinstance(c.args[0], ast.List | ast.Name) for c in started if c.args)


def _shell_off(call: ast.Call) -> bool:
    shell = _keyword(call, "shell")
    return shell is None or _is_constant(shell, False)


def test_every_yaml_load_is_safe() -> None:
    calls = _calls()
    ruamel = [(w, c) for w, c in calls if _dotted(c.func) == "YAML"]
    assert len(ruamel) >= 1  # the schedules file
    typ = [(w, _keyword(c, "typ")) for w, c in ruamel]
    assert [w for w, t in typ if not (isinstance(t, ast.Constant) and t.value == "safe")] == []
    unsafe = {"yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"}
    assert [w for w, c in calls if _dotted(c.func) in unsafe] == []
    for where, call in calls:
        if _dotted(call.func) in ("yaml.load", "yaml.load_all"):
            loader = _keyword(call, "Loader")
            assert loader is not None and _dotted(loader).endswith("SafeLoader"), where


# --- checkpoints ------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls ``os.mkdir(path)``: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (os.mkdir, (self.path,))


def _checkpoint(folder: Path, fmt: str, **extra: object) -> Path:
    """A checkpoint folder whose card records the checksum of what was written."""
    payload = {"format": fmt, "state_dict": {"w": torch.zeros(3)}, **extra}
    return write_checkpoint(folder, payload, {"title": "test"}, lambda card: "# card\n")


@pytest.mark.parametrize(
    "load",
    [load_checkpoint, load_model],
    ids=["invasive", "yield"],
)
def test_a_checkpoint_that_would_run_code_is_refused_although_its_checksum_matches(
    load: Callable[[Path], object], tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    fmt = INVASIVE_FORMAT if load is load_checkpoint else YIELD_FORMAT
    folder = _checkpoint(tmp_path / "model", fmt, hook=_RunsCode(marker)).parent
    with pytest.raises(ModelError, match="cannot be loaded safely") as caught:
        load(folder)
    message = str(caught.value)
    assert "posix.mkdir" in message and "\n" not in message
    assert "weights_only" not in message  # torch's advice to load it unsafely is not passed on
    assert not marker.exists()


def test_the_run_refuses_a_checkpoint_that_would_run_code_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    folder = _checkpoint(tmp_path / "model", INVASIVE_FORMAT, hook=_RunsCode(marker)).parent
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--invasive-model", str(folder), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be loaded safely" in lines[0]
    assert not marker.exists() and not out.exists()


def _no_card(folder: Path) -> None:
    (folder / CARD_JSON).unlink()


def _no_checksum(folder: Path) -> None:
    card = json.loads((folder / CARD_JSON).read_text())
    del card["sha256"]
    (folder / CARD_JSON).write_text(json.dumps(card))


def _card_not_json(folder: Path) -> None:
    (folder / CARD_JSON).write_text("{not json")


def _swapped(folder: Path) -> None:
    """Another well-formed checkpoint put in place of the one the card describes."""
    other = _checkpoint(folder.parent / "other", INVASIVE_FORMAT, extra=torch.ones(2))
    shutil.copyfile(other, folder / CHECKPOINT)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (_no_card, "has no card.json beside it"),
        (_no_checksum, "has no checksum"),
        (_card_not_json, "cannot be read"),
        (_swapped, "does not match its card"),
    ],
    ids=["no-card", "no-checksum", "card-not-json", "swapped-checkpoint"],
)
def test_a_checkpoint_not_matching_its_card_is_refused_in_one_line(
    change: Callable[[Path], None], expect: str, tmp_path: Path
) -> None:
    folder = _checkpoint(tmp_path / "model", INVASIVE_FORMAT).parent
    load_verified(folder, fmt=INVASIVE_FORMAT, trainer="agrimon train invasive")  # intact: loads
    change(folder)
    with pytest.raises(ModelError, match=expect) as caught:
        load_verified(folder, fmt=INVASIVE_FORMAT, trainer="agrimon train invasive")
    assert "\n" not in str(caught.value)


# --- KML: no entity expansion, no network -----------------------------------------------

MARKER = "MARKER-local-file-7Hq2"
PLACEMARK = (
    "<Placemark><name>{name}</name><Polygon><outerBoundaryIs><LinearRing><coordinates>"
    + " ".join(f"{x},{y}" for x, y in ring())
    + "</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>"
)
KML_HEAD = '<?xml version="1.0"?>\n{dtd}<kml xmlns="http://www.opengis.net/kml/2.2"><Document>'


def _laughs() -> str:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    return f"<!DOCTYPE kml [{''.join(entities)}]>\n"


def _kml(case: str, port: int, secret_file: Path) -> str:
    dtd, name, extra = "", "field", ""
    if case == "file-entity":
        dtd, name = f'<!DOCTYPE kml [<!ENTITY x SYSTEM "file://{secret_file}">]>\n', "&x;"
    elif case == "http-entity":
        dtd, name = f'<!DOCTYPE kml [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/x">]>\n', "&x;"
    elif case == "parameter-entity":
        dtd = f'<!DOCTYPE kml [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p.dtd"> %p;]>\n'
    elif case == "billion-laughs":
        dtd, name = _laughs(), "&lol9;"
    elif case == "network-link":
        link = f"http://127.0.0.1:{port}/more.kml"
        extra = f"<NetworkLink><Link><href>{link}</href></Link></NetworkLink>"
    return KML_HEAD.format(dtd=dtd) + extra + PLACEMARK.format(name=name) + "</Document></kml>"


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback port that records every connection made to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.1)
    seen: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                seen.append(conn.recv(4096))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1], seen
    stop.set()
    thread.join()
    sock.close()


def _packed(container: str, folder: Path, text: str) -> Path:
    if container == "kml":
        path = folder / "aoi.kml"
        path.write_text(text, encoding="utf-8")
        return path
    path = folder / f"aoi.{container}"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("doc.kml" if container == "kmz" else "aoi.kml", text)
    return path


@pytest.mark.parametrize("container", ["kml", "kmz", "zip"])
@pytest.mark.parametrize(
    "case", ["file-entity", "http-entity", "parameter-entity", "billion-laughs", "network-link"]
)
def test_kml_entities_never_expand_and_never_reach_the_network(
    case: str, container: str, tmp_path: Path, listener: tuple[int, list[bytes]]
) -> None:
    port, seen = listener
    secret_file = tmp_path / "local-secret.txt"
    secret_file.write_text(MARKER)
    path = _packed(container, tmp_path, _kml(case, port, secret_file))
    began = time.monotonic()
    try:
        names = [str(n) for n in read_aoi(path).zones["name"]]
        outcome = "\n".join(names)
    except AgrimonError as err:
        names, outcome = [], str(err)
        assert "\n" not in outcome and path.name in outcome
    assert time.monotonic() - began < 10
    assert MARKER not in outcome and "lollol" not in outcome
    if case == "network-link":  # no DTD: read, without what the link points at
        assert names == ["field"]
    else:  # GDAL refuses a document type declaration
        assert names == [] and "cannot be read as" in outcome
    time.sleep(0.2)
    assert seen == []


# --- the schedules file: safe YAML ----------------------------------------------------


def _nested_aliases(depth: int) -> str:
    """A list that is 10 copies of 10 copies ... of ``ndvi`` (10**(depth+1) with aliases)."""
    if depth == 0:
        return "&l0 [" + ", ".join(["ndvi"] * 10) + "]"
    return f"&l{depth} [{_nested_aliases(depth - 1)}, " + ", ".join([f"*l{depth - 1}"] * 9) + "]"


def _entry(indices: str, name: str = "weekly") -> str:
    return (
        f"schedules:\n  - name: {name}\n    flow: monitor\n    period: last 30 days\n"
        f'    cron: "0 3 * * 1"\n    parameters:\n      aoi: field.geojson\n'
        f"      indices: {indices}\n"
    )


def _yaml_cases(marker: Path) -> dict[str, tuple[str, str]]:
    """Schedules files agrimon must refuse: text and a fragment of the message."""
    return {
        "python-object-apply": (
            _entry("ndvi", name=f'!!python/object/apply:os.mkdir ["{marker}"]'),
            "python/object/apply",
        ),
        "python-name": (_entry("!!python/name:os.system"), "python/name"),
        "python-object-new": (
            _entry(f'!!python/object/new:os.mkdir ["{marker}"]'),
            "python/object/new",
        ),
        "billion-laughs": (_entry(_nested_aliases(8)), "expands to 1,111,111,1"),
        "self-reference": (_entry("&c [ndvi, *c]"), "contains itself"),
        "deep-nesting": ("schedules: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "python-object-apply",
        "python-name",
        "python-object-new",
        "billion-laughs",
        "self-reference",
        "deep-nesting",
    ],
)
def test_a_schedules_file_that_would_run_code_or_explode_is_refused_in_one_line(
    case: str, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    text, fragment = _yaml_cases(marker)[case]
    (tmp_path / "field.geojson").write_text(collection(feature(polygon())), encoding="utf-8")
    path = tmp_path / "schedules.yaml"
    path.write_text(text, encoding="utf-8")
    began = time.monotonic()
    with pytest.raises(ConfigError, match=fragment) as caught:
        read_schedules(path)
    assert time.monotonic() - began < 10
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert not marker.exists()


def test_the_cli_refuses_a_python_tag_in_the_schedules_file_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    args = schedules(_yaml_cases(marker)["python-object-apply"][0])(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not valid YAML" in lines[0]
    assert not marker.exists()


# --- names into paths; input limits ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_every_path_and_key_made_from_an_aoi_name_stays_one_component(text: str) -> None:
    name = _slug(Path(text + ".geojson"))
    out = Path("/srv/outputs")
    period = "2024-01-01_2024-03-31"
    folder = out / name / period
    stem = run_stem(name, period)
    made = [
        folder,
        folder / f"{stem}.gpkg",
        folder / f"{stem}.qgz",
        folder.parent / f".{folder.name}{WORK_SUFFIX}",
    ]
    for path in made:
        assert path.parent in (folder, out / name)
        assert ".." not in path.parts and path.is_relative_to(out / name)
    assert Path(stem).name == stem and not any(ord(c) < 32 for c in stem)
    key = artifact_key(name)
    assert raise_on_name_alphanumeric_dashes_only(key) == key  # Prefect accepts it
    assert key.startswith("agrimon-") and len(key) > len("agrimon-")


def test_fields_over_the_vertex_limit_are_refused_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aoi_module, "MAX_FEATURE_VERTICES", 50)
    path = tmp_path / "fields.geojson"
    lon, lat, side = ring()[0][0], ring()[0][1], 0.01
    dense = [[lon + side * k / 60, lat] for k in range(60)]
    dense += [[lon + side, lat + side], [lon, lat + side], [lon, lat]]
    path.write_text(
        collection(feature(polygon(), "small"), feature(polygon(dense), "dense")),
        encoding="utf-8",
    )
    spec = make_spec(fields=path, out=tmp_path / "out")
    zones = gpd.GeoDataFrame({"zone_id": [1], "name": ["a"]}, geometry=[box(0, 0, 1, 1)], crs=4326)
    with pytest.raises(ConfigError) as caught:
        forecast_units(spec, None, zones)
    message = str(caught.value)
    assert message.startswith(f"--fields {path}:")
    assert "feature 2 ('dense') has 63 vertices, more than 50" in message
    assert "\n" not in message
