"""Response cache, retries and band conversions: the pieces every real source relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agrimon.cache import Cache, OfflineMissError, request_key
from agrimon.errors import SourceError
from agrimon.retry import RetryableError, RetryPolicy, with_retries
from agrimon.sources import bands


def test_request_key_ignores_dict_order_and_sees_every_value() -> None:
    assert request_key("s", {"a": 1, "b": [1, 2]}) == request_key("s", {"b": [1, 2], "a": 1})
    assert request_key("s", {"a": 1}) != request_key("s", {"a": 2})
    assert len(request_key("x")) == 64


def test_fetch_downloads_once_then_serves_the_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    calls: list[int] = []

    def download() -> bytes:
        calls.append(1)
        return b"payload"

    key = request_key("one")
    assert cache.fetch(key, download, what="thing") == b"payload"
    assert cache.fetch(key, download, what="thing") == b"payload"
    assert calls == [1]
    assert cache.stats().entries == 1
    # No temporary file is left behind by the atomic write.
    assert [p.name for p in cache.path(key).parent.iterdir()] == [f"{key}.bin"]


def test_a_corrupt_entry_is_discarded_and_fetched_again(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    key = request_key("two")
    cache.put(key, b"good bytes")
    path = cache.path(key)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # flip bits in the payload: the stored checksum no longer matches
    path.write_bytes(bytes(raw))
    assert cache.get(key) is None
    assert not path.exists()
    assert cache.fetch(key, lambda: b"fresh", what="thing") == b"fresh"
    assert cache.get(key) == b"fresh"


def test_a_hit_failing_its_check_is_refetched(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    key = request_key("three")
    cache.put(key, b"not json")

    def check(payload: bytes) -> None:
        if not payload.startswith(b"{"):
            raise ValueError("bad")

    assert cache.fetch(key, lambda: b"{}", what="thing", check=check) == b"{}"


def test_offline_serves_hits_and_fails_clearly_on_a_miss(tmp_path: Path) -> None:
    online = Cache(tmp_path / "c")
    online.put(request_key("hit"), b"x")
    offline = Cache(tmp_path / "c", offline=True)
    assert offline.fetch(request_key("hit"), lambda: b"never", what="hit") == b"x"
    with pytest.raises(OfflineMissError) as err:
        offline.fetch(request_key("miss"), lambda: b"never", what="scene S1 for tile T")
    assert "scene S1 for tile T" in str(err.value) and "--offline" in str(err.value)
    assert isinstance(err.value, SourceError)


def test_clear_removes_everything(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    for i in range(3):
        cache.put(request_key(i), b"12345")
    assert cache.stats().entries == 3
    assert cache.clear().entries == 3
    assert cache.stats().entries == 0


def test_disabled_cache_never_stores(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c", enabled=False)
    calls: list[int] = []

    def download() -> bytes:
        calls.append(1)
        return b"v"

    for _ in range(2):
        cache.fetch(request_key("k"), download, what="k")
    assert len(calls) == 2
    assert not (tmp_path / "c").exists()


def test_retries_back_off_then_succeed() -> None:
    waits: list[float] = []
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise RetryableError("503", wait_s=0.25 if len(attempts) == 1 else None)
        return "ok"

    policy = RetryPolicy(attempts=4, backoff_s=1.0)
    assert with_retries(flaky, what="scene X", policy=policy, sleep=waits.append) == "ok"
    assert waits[0] == 0.25  # the server's Retry-After wins
    assert 1.5 <= waits[1] <= 2.5  # then exponential backoff with jitter


def test_retries_give_up_with_a_message_naming_the_scene() -> None:
    def broken() -> None:
        raise RetryableError("truncated body")

    with pytest.raises(SourceError) as err:
        with_retries(
            broken,
            what="scene S2A_X for tile 33N_1",
            policy=RetryPolicy(3, 0),
            sleep=lambda s: None,
        )
    message = str(err.value)
    assert (
        "scene S2A_X for tile 33N_1" in message
        and "3 attempts" in message
        and "truncated" in message
    )
    assert "\n" not in message


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("B04", "red"),
        ("b4", "red"),
        ("B8A", "nir08"),
        ("B08", "nir"),
        ("red", "red"),
        ("SCL", "scl"),
        ("B13", None),
    ],
)
def test_common_names(label: str, name: str | None) -> None:
    assert bands.common_name(label) == name


@pytest.mark.parametrize(
    ("declared", "baseline", "applied", "offset"),
    [
        (None, "02.01", None, 0.0),  # 2015 data: nothing to remove
        (None, "04.00", None, -0.1),  # Planetary Computer: baseline known, no offset declared
        (-0.1, "05.09", False, -0.1),  # Earth Search, not yet applied
        (-0.1, "05.09", True, 0.0),  # Earth Search, already applied: never twice
        (None, "04.00", True, 0.0),
        (0.0, None, None, 0.0),
        (0.0, "04.00", None, -0.1),  # a zero declared offset is "none declared"
        (-0.05, None, None, -0.05),  # a declared offset is honoured as is
    ],
)
def test_baseline_offset_applied_exactly_once(
    declared: float | None, baseline: str | None, applied: bool | None, offset: float
) -> None:
    assert bands.reflectance_offset(declared, baseline, applied) == offset


def test_dn_to_reflectance() -> None:
    dn = np.array([0, 1000, 1234, 11000], dtype=np.uint16)
    out = bands.dn_to_reflectance(dn, offset=-0.1)
    assert out.dtype == np.float32
    assert np.isnan(out[0])
    np.testing.assert_allclose(out[1:], [0.0, 0.0234, 1.0], atol=1e-7)
