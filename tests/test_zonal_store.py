"""Zonal partials saved to and loaded from ``.npz`` files: exact round trips, clear errors."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, BinaryIO

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from agrimon.errors import ProductError
from agrimon.grid import geobox_for
from agrimon.indices.zonal import (
    MEDIAN_BINS,
    PARTIAL_FORMAT,
    ZonalPartial,
    combine_partials,
    load_partial,
    save_partial,
    zonal_partial,
    zonal_table,
)

EPSG = 32633
RES = 10.0
#: Zones of more than this many (expected) pixels get a histogram median.
SMALL_LIMIT = 10
#: Tiles of the 30 × 40 grid: the left 17 columns, the rest.
TILES = ((slice(0, 30), slice(0, 17)), (slice(0, 30), slice(17, 40)))
ARRAYS = ("zone_ids", "times", "pixels", "count", "mean", "m2", "binned")
PER_ZONE = ("values", "fallback", "histogram")


# --- helpers --------------------------------------------------------------------------------


def _zones(*geoms: BaseGeometry) -> gpd.GeoDataFrame:
    ids = list(range(1, len(geoms) + 1))
    names = [f"z{i} Žalec =1\n" for i in ids]  # non-ASCII, formula-like, a line feed
    return gpd.GeoDataFrame({"zone_id": ids, "name": names}, geometry=list(geoms), crs=EPSG)


ZONES = _zones(
    box(0, 0, 400, 300),  # everything: binned
    box(95, 20, 260, 250),  # across the seam (x = 170 m): binned
    box(171, 181, 173, 183),  # smaller than a pixel, at the seam: the fallback pixel
    box(0, 0, 30, 30),  # a small field on the left tile: values kept
    box(1000, 1000, 1010, 1010),  # off the grid, small: zero-size values
    box(2000, 0, 3000, 1000),  # off the grid, large: binned without histogram
)


def _stack(rng: np.random.Generator, n_times: int) -> tuple[xr.Dataset, NDArray[np.bool_]]:
    """Two random float32-valued indices with some NaN on 30 × 40 pixels, and a clear mask."""
    shape = (n_times, 30, 40)
    values = {}
    for name in ("ndvi", "ndwi"):
        v = rng.uniform(-0.2, 0.9, size=shape).astype(np.float32).astype(np.float64)
        v[rng.random(shape) < 0.05] = np.nan
        values[name] = v
    times = pd.date_range("2024-01-01", periods=n_times, freq="10D")
    stack = xr.Dataset(
        {k: (("time", "y", "x"), v) for k, v in values.items()}, coords={"time": times}
    )
    return stack, rng.random(shape) < 0.8


def _grid() -> GeoBox:
    return geobox_for((0.0, 0.0, 400.0, 300.0), EPSG, RES)


def _tiles(**kwargs: Any) -> list[ZonalPartial]:
    """One partial per tile; the second tile misses the first day."""
    stack, clear = _stack(np.random.default_rng(31), 4)
    geobox = _grid()
    partials = []
    for k, (rows, cols) in enumerate(TILES):
        days = slice(k, None)
        partials.append(
            zonal_partial(
                stack.isel(time=days, y=rows, x=cols),
                ZONES,
                clear=clear[days, rows, cols],
                geobox=geobox[rows, cols],
                **kwargs,
            )
        )
    return partials


def _assert_same_array(got: Any, want: Any, what: str) -> None:
    """Same type, dtype, shape and bits (NaN payloads included)."""
    assert isinstance(got, np.ndarray), what
    assert got.dtype == want.dtype, what
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(got, want, err_msg=what)
    assert got.tobytes() == np.ascontiguousarray(want).tobytes(), what


def _assert_same_partial(got: ZonalPartial, want: ZonalPartial) -> None:
    assert got.names == want.names and got.indices == want.indices
    for name in ARRAYS:
        _assert_same_array(getattr(got, name), getattr(want, name), name)
    for name in PER_ZONE:
        entries, expected = getattr(got, name), getattr(want, name)
        if expected is None:
            assert entries is None, name
            continue
        assert isinstance(entries, tuple) and len(entries) == len(expected), name
        for z, (entry, wanted) in enumerate(zip(entries, expected, strict=True)):
            if wanted is None:
                assert entry is None, f"{name}[{z}]"
            else:
                _assert_same_array(entry, wanted, f"{name}[{z}]")


def _round_trip(partial: ZonalPartial, path: Path) -> ZonalPartial:
    return load_partial(save_partial(partial, path))


def _one_line_error(path: Path) -> str:
    with pytest.raises(ProductError) as err:
        load_partial(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "--force" in message
    return message


@pytest.fixture(scope="module")
def binned() -> list[ZonalPartial]:
    return _tiles(max_exact_pixels=SMALL_LIMIT)


# --- round trips ------------------------------------------------------------------------------


def test_the_partials_cover_every_kind_of_entry(binned: list[ZonalPartial]) -> None:
    # Every field of the dataclass is compared below (a new field needs a format change).
    assert {f.name for f in fields(ZonalPartial)} == {*ARRAYS, *PER_ZONE, "names", "indices"}
    left, right = binned
    assert left.binned.tolist() == [True, True, False, False, False, True]
    assert left.values is not None and left.histogram is not None
    assert left.values[0] is None and left.histogram[0] is not None  # binned, pixels here
    assert left.histogram[0].shape[-1] == MEDIAN_BINS
    assert left.values[5] is None and left.histogram[5] is None  # binned, no pixel here
    assert left.values[4] is not None and left.values[4].shape == (4, 2, 0)  # no pixel
    assert left.values[3] is not None and left.values[3].dtype == np.float32
    assert right.values is not None and right.values[3] is not None
    assert right.values[3].size == 0  # the field lies on the other tile
    # The tiny zone's representative point lies on exactly one tile.
    assert sum(p.fallback[2] is not None for p in binned) == 1
    assert all(p.pixels[2] == 0 for p in binned)
    assert left.times.dtype == np.dtype("datetime64[ns]") and len(right.times) == 3


@pytest.mark.parametrize("median", [True, False])
def test_a_round_trip_gives_back_every_field_exactly(
    binned: list[ZonalPartial], median: bool, tmp_path: Path
) -> None:
    partials = binned if median else _tiles(median=False)
    for k, partial in enumerate(partials):
        got = _round_trip(partial, tmp_path / f"tile{k}.npz")
        _assert_same_partial(got, partial)
        assert (got.values is None) == (not median) and (got.histogram is None) == (not median)


def test_combined_and_float64_partials_round_trip(
    binned: list[ZonalPartial], tmp_path: Path
) -> None:
    combined = combine_partials(binned)
    assert combined.histogram is not None and combined.histogram[0] is not None
    assert combined.histogram[0].dtype == np.int64
    _assert_same_partial(_round_trip(combined, tmp_path / "combined.npz"), combined)
    # Values float32 cannot hold are kept as float64, and come back so.
    stack, clear = _stack(np.random.default_rng(37), 2)
    wide = zonal_partial(stack + 1e-9, ZONES, clear=clear, geobox=_grid())
    assert wide.values is not None and wide.values[3] is not None
    assert wide.values[3].dtype == np.float64
    _assert_same_partial(_round_trip(wide, tmp_path / "wide.npz"), wide)


@pytest.mark.parametrize("median", [True, False])
def test_the_table_from_saved_partials_is_the_in_memory_one(
    binned: list[ZonalPartial], median: bool, tmp_path: Path
) -> None:
    partials = binned if median else _tiles(median=False)
    loaded = [_round_trip(p, tmp_path / f"tile{k}.npz") for k, p in enumerate(partials)]
    table = zonal_table(combine_partials(loaded))
    want = zonal_table(combine_partials(partials))
    pd.testing.assert_frame_equal(table, want, check_exact=True)
    assert (table.pixels[table.zone_id == 3] == 1).all()  # the fallback pixel was used


# --- the file ----------------------------------------------------------------------------------


def test_the_file_is_one_npz_without_pickles_and_no_temporary_file(
    binned: list[ZonalPartial], tmp_path: Path
) -> None:
    path = tmp_path / "sub" / "tile.npz"
    assert save_partial(binned[0], path) == path
    assert save_partial(binned[1], path) == path  # replaces the file in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["tile.npz"]
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    assert all(a.dtype != object for a in members.values())
    meta = json.loads(members["meta"].tobytes())
    assert meta["version"] == PARTIAL_FORMAT and meta["names"] == list(ZONES["name"])
    assert meta["present"]["values"] == [False, False, True, True, True, False]
    _assert_same_partial(load_partial(path), binned[1])


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(
    binned: list[ZonalPartial], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_partial(binned[0], tmp_path / "tile.npz")
    before = path.read_bytes()

    def disk_full(file: BinaryIO, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(ProductError, match="No space left on device"):
        save_partial(binned[1], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tile.npz"]

    def interrupted(file: BinaryIO, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_partial(binned[1], tmp_path / "new.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["tile.npz"]


def test_a_truncated_or_damaged_file_is_refused_naming_it(
    binned: list[ZonalPartial], tmp_path: Path
) -> None:
    path = save_partial(binned[0], tmp_path / "tile.npz")
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 10, 3, 0):
        path.write_bytes(data[:size])
        _one_line_error(path)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside a member: its CRC no longer matches
    path.write_bytes(bytes(flipped))
    assert "CRC" in _one_line_error(path)


def test_other_files_are_refused_naming_them(binned: list[ZonalPartial], tmp_path: Path) -> None:
    rng = np.random.default_rng(41)
    other = tmp_path / "random.npz"
    np.savez(other, a=rng.random(5), meta=rng.integers(0, 255, 8).astype(np.uint8))
    _one_line_error(other)
    plain = tmp_path / "plain.npz"
    np.savez(plain, rng.random(3))
    assert "'meta'" in _one_line_error(plain)
    single = tmp_path / "single.npy"
    np.save(single, rng.random(3))
    assert ".npy" in _one_line_error(single)
    noise = tmp_path / "noise.npz"
    noise.write_bytes(rng.bytes(200))
    _one_line_error(noise)
    _one_line_error(tmp_path / "missing.npz")


def test_another_version_or_changed_members_are_refused(
    binned: list[ZonalPartial], tmp_path: Path
) -> None:
    path = save_partial(binned[0], tmp_path / "tile.npz")
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    meta = json.loads(members["meta"].tobytes())

    def variant(name: str, meta: dict[str, Any], **change: NDArray[Any]) -> Path:
        out = tmp_path / name
        text = json.dumps(meta).encode()
        np.savez(out, **{**members, **change, "meta": np.frombuffer(text, dtype=np.uint8)})
        return out

    newer = variant("newer.npz", {**meta, "version": PARTIAL_FORMAT + 1})
    assert f"format version {PARTIAL_FORMAT + 1}" in _one_line_error(newer)
    cast = variant("cast.npz", meta, count=members["count"].astype(np.int32))
    assert "'count'" in _one_line_error(cast)
    extra = variant("extra.npz", meta, stray=np.zeros(1))
    _one_line_error(extra)
    kind = variant("kind.npz", {**meta, "kind": "something else"})
    _one_line_error(kind)
