"""Response cache, retries and band conversions: the pieces every real source relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agrimon.cache import (
    TAG_NAME,
    TAG_SIGNATURE,
    Cache,
    CorruptCacheError,
    OfflineMissError,
    is_cache_folder,
    request_key,
)
from agrimon.errors import ConfigError, SourceError
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


def _damage(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # the stored checksum no longer matches
    path.write_bytes(bytes(raw))


def test_offline_a_corrupt_entry_is_reported_as_corrupt_not_missing(tmp_path: Path) -> None:
    online = Cache(tmp_path / "c")
    key = request_key("scene")
    online.put(key, b"good bytes")
    path = online.path(key)
    _damage(path)
    offline = Cache(tmp_path / "c", offline=True)
    with pytest.raises(CorruptCacheError) as err:
        offline.fetch(key, lambda: b"never", what="scene S1 for tile T")
    message = str(err.value)
    assert message == (
        f"the cached copy of scene S1 for tile T at '{path}' is corrupt (checksum mismatch): "
        "run once without --offline to fetch it again"
    )
    assert isinstance(err.value, OfflineMissError) and isinstance(err.value, SourceError)
    # Left in place (the message names it); an online run replaces it.
    assert path.exists()
    assert online.fetch(key, lambda: b"fresh", what="scene S1 for tile T") == b"fresh"
    assert offline.fetch(key, lambda: b"never", what="scene S1 for tile T") == b"fresh"


def test_offline_a_foreign_or_truncated_file_is_corrupt(tmp_path: Path) -> None:
    offline = Cache(tmp_path / "c", offline=True)
    key = request_key("foreign")
    path = offline.path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # e.g. a disk that filled up
    with pytest.raises(CorruptCacheError, match=r"is corrupt \(not an agrimon cache entry\)"):
        offline.fetch(key, lambda: b"never", what="page 1")
    Cache(tmp_path / "c").put(key, b"x" * 100)
    path.write_bytes(path.read_bytes()[:90])
    with pytest.raises(CorruptCacheError, match=r"is corrupt \(checksum mismatch\)"):
        offline.fetch(key, lambda: b"never", what="page 1")


def test_offline_a_hit_failing_its_check_is_corrupt(tmp_path: Path) -> None:
    Cache(tmp_path / "c").put(request_key("json"), b"not json")
    offline = Cache(tmp_path / "c", offline=True)

    def check(payload: bytes) -> None:
        if not payload.startswith(b"{"):
            raise ValueError("undecodable page\nsecond line")

    with pytest.raises(CorruptCacheError) as err:
        offline.fetch(request_key("json"), lambda: b"{}", what="page 2", check=check)
    message = str(err.value)
    assert "the cached copy of page 2" in message
    assert "is corrupt (ValueError: undecodable page second line)" in message
    assert "\n" not in message and "without --offline" in message
    # A miss is still a miss.
    with pytest.raises(OfflineMissError, match="not in the cache") as miss:
        offline.fetch(request_key("other"), lambda: b"{}", what="page 3", check=check)
    assert not isinstance(miss.value, CorruptCacheError)


def test_clear_removes_the_entries_and_nothing_else(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    for i in range(3):
        cache.put(request_key(i), b"12345")
    assert (tmp_path / "c" / TAG_NAME).read_text().startswith(TAG_SIGNATURE)
    # Someone's file kept in the tagged cache folder, and one in a fan-out folder.
    (tmp_path / "c" / "notes.txt").write_text("mine")
    fan = cache.path(request_key(0)).parent
    (fan / "keep.me").write_text("mine too")
    stats = cache.stats()
    assert (stats.entries, stats.bytes) == (3, 3 * (len(b"agrimon-cache-1\n") + 65 + 5))
    assert cache.clear().entries == 3
    assert cache.stats().entries == 0
    left = sorted(str(p.relative_to(tmp_path / "c")) for p in (tmp_path / "c").rglob("*"))
    assert left == sorted([TAG_NAME, "notes.txt", fan.name, f"{fan.name}/keep.me"])


def _user_folder(root: Path) -> dict[str, bytes]:
    """A folder of someone's documents, as it was before any command ran."""
    (root / "letters").mkdir(parents=True)
    files = {"report.docx": b"\x50\x4b report", "letters/2024.txt": b"dear ...", "ab": b"x"}
    for name, content in files.items():
        (root / name).write_bytes(content)
    return files


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    agrimon = Path(sys.executable).parent / "agrimon"
    return subprocess.run(
        [str(agrimon), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("command", ["clear", "info"])
def test_cache_commands_refuse_a_folder_that_is_no_cache(tmp_path: Path, command: str) -> None:
    files = _user_folder(tmp_path / "documents")
    proc = _cli("cache", command, "--cache-dir", str(tmp_path / "documents"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "is not an agrimon cache" in lines[0] and "documents" in lines[0]
    assert proc.stdout == ""
    for name, content in files.items():  # every document is still there, unchanged
        assert (tmp_path / "documents" / name).read_bytes() == content


@pytest.mark.parametrize("command", ["clear", "info"])
def test_cache_commands_on_a_file_say_so_in_one_line(tmp_path: Path, command: str) -> None:
    path = tmp_path / "file.txt"
    path.write_text("not a folder")
    proc = _cli("cache", command, "--cache-dir", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --cache-dir '{path}' is a file, not a folder: give a folder for the cache "
        "(default data/cache)"
    ]
    assert path.read_text() == "not a folder"


def test_cache_commands_on_a_real_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    for i in range(2):
        cache.put(request_key(i), b"1234567890")
    info = _cli("cache", "info", "--cache-dir", str(tmp_path / "c"))
    assert info.returncode == 0
    assert info.stdout.strip() == f"{tmp_path / 'c'}: 2 cached responses, 182.0 B"
    cleared = _cli("cache", "clear", "--cache-dir", str(tmp_path / "c"))
    assert cleared.returncode == 0
    assert cleared.stdout.strip() == f"{tmp_path / 'c'}: removed 2 cached responses, 182.0 B"
    assert cache.stats().entries == 0 and (tmp_path / "c" / TAG_NAME).exists()
    # A cache that does not exist yet is empty, not an error; nothing is created.
    missing = _cli("cache", "clear", "--cache-dir", str(tmp_path / "none"))
    assert missing.returncode == 0 and "removed 0 cached responses" in missing.stdout
    assert not (tmp_path / "none").exists()


def test_an_untagged_cache_of_older_versions_is_still_a_cache(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    cache.put(request_key("a"), b"abc")
    (tmp_path / "c" / TAG_NAME).unlink()  # as written before the tag existed
    assert is_cache_folder(tmp_path / "c")
    assert cache.clear().entries == 1
    # An entry's name alone does not make a folder a cache: any other file refuses it.
    cache.put(request_key("b"), b"abc")
    (tmp_path / "c" / TAG_NAME).unlink()
    (tmp_path / "c" / "x.txt").write_text("x")
    assert not is_cache_folder(tmp_path / "c")
    with pytest.raises(ConfigError, match="not an agrimon cache"):
        cache.clear()
    assert cache.path(request_key("b")).exists()


def test_a_run_never_writes_its_cache_into_someone_elses_folder(tmp_path: Path) -> None:
    files = _user_folder(tmp_path / "documents")
    cache = Cache(tmp_path / "documents")
    with pytest.raises(ConfigError, match="not an agrimon cache"):
        cache.check(for_writing=True)
    with pytest.raises(ConfigError, match="not an agrimon cache"):
        cache.put(request_key("x"), b"payload")
    assert sorted(
        str(p.relative_to(tmp_path / "documents"))
        for p in (tmp_path / "documents").rglob("*")
        if p.is_file()
    ) == sorted(files)


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
