"""Stop signals reach the run (flows.runner): lost in a weakref callback, or behind an error."""

from __future__ import annotations

import gc
import signal
import sys
import time
import weakref
from collections.abc import Callable

import pytest
from flows.runner import _signals_interrupt
from prefect.utilities.engine import capture_sigterm

from agrimon.errors import InterruptedRun


class _Thing:
    pass


def _signal_inside_a_callback(signum: int) -> None:
    """Deliver ``signum`` while a weakref callback runs: its handler's raise is swallowed."""
    thing = _Thing()

    def callback(_: object) -> None:
        signal.raise_signal(signum)  # the handler runs here, inside the callback

    ref = weakref.ref(thing, callback)
    del thing
    gc.collect()
    assert ref() is None


def _run(work: Callable[[], None]) -> None:
    """Run ``work`` as the CLI runs a flow; fail if it returns (its stop was lost)."""
    with _signals_interrupt():
        work()
    pytest.fail("the stop was swallowed by the callback and never reached the run")


def _deliver_and_go_on(deliver: Callable[[], None]) -> Callable[[], None]:
    def work() -> None:
        deliver()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a lost stop would let the run go on
            time.sleep(0.01)

    return work


@pytest.mark.parametrize(
    ("signum", "code", "name"),
    [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")],
)
def test_a_stop_swallowed_by_a_callback_is_sent_again(
    signum: int, code: int, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InterruptedRun) as caught:
        _run(_deliver_and_go_on(lambda: _signal_inside_a_callback(signum)))
    stopped = caught.value
    assert stopped.exit_code == code
    assert str(stopped).startswith(f"interrupted by {name}: the run stopped")
    assert "Exception ignored" not in capsys.readouterr().err


def test_prefects_sigterm_swallowed_inside_a_flow_is_sent_again() -> None:
    def inside_a_flow() -> None:
        with capture_sigterm():  # what Prefect's flow engine installs while a flow runs
            _signal_inside_a_callback(signal.SIGTERM)
            time.sleep(10)

    with pytest.raises(InterruptedRun) as caught:
        _run(inside_a_flow)
    assert caught.value.exit_code == 143


def test_other_unraisable_errors_still_reach_the_previous_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    thing = _Thing()

    def callback(_: object) -> None:
        raise ValueError("a plain error in a callback")

    with _signals_interrupt():
        ref = weakref.ref(thing, callback)
        del thing
        gc.collect()
    assert ref() is None
    assert [str(e) for e in seen] == ["a plain error in a callback"]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_whose_handling_fails_in_prefect_is_still_a_stop(signum: int, code: int) -> None:
    """SIGTERM as Prefect sets up a task run: its crash handler raises, handling the stop."""

    def task_engine() -> None:
        try:
            signal.raise_signal(signum)
            time.sleep(10)
        except BaseException:
            raise ValueError("Task run is not set")  # noqa: B904 (Prefect's, as it does it)

    with pytest.raises(InterruptedRun) as caught:
        _run(task_engine)
    assert caught.value.exit_code == code


def _fails_handling_another_error() -> None:
    with _signals_interrupt():
        try:
            raise OSError("disk")
        except OSError:
            raise ValueError("plain")  # noqa: B904


def test_an_error_without_a_stop_behind_it_is_not_a_stop() -> None:
    with pytest.raises(ValueError, match="plain"):
        _fails_handling_another_error()
