"""perf/pinning.py's pure part: CPU lists, and which pinning ``bench.py --pin`` picks
(or why it runs unpinned)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "perf"))

import pinning  # noqa: E402
from pinning import choose, cpu_list, parse_cpus  # noqa: E402


@pytest.fixture(autouse=True)
def taskset_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pinning.shutil, "which", lambda name: f"/usr/bin/{name}")


def test_cpu_lists_round_trip():
    assert parse_cpus("0-3,8, 10-11") == {0, 1, 2, 3, 8, 10, 11}
    assert cpu_list({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"
    assert cpu_list({5}) == "5"
    for bad in ("", "3-1", "x", "-1"):
        with pytest.raises(ValueError):
            parse_cpus(bad)


def test_auto_gives_the_client_a_quarter_of_the_cpus_between_one_and_four():
    pin, why = choose("auto", set(range(16)))
    assert pin is not None and why == ""
    assert pin.client == set(range(4)) and pin.tool == set(range(4, 16))
    pin, _ = choose("auto", {0, 1})
    assert pin is not None and (pin.client, pin.tool) == ({0}, {1})
    pin, _ = choose("auto", set(range(64)))
    assert pin is not None and len(pin.client) == 4


@pytest.mark.parametrize("spec, available, reason", [
    ("auto", {0}, "at least 2 CPUs"),
    ("0-1:1", {0, 1}, "overlap"),
    ("0:5", {0, 1}, "not available"),
])
def test_pinning_is_skipped_with_a_reason(spec: str, available: set[int], reason: str):
    pin, why = choose(spec, available)
    assert pin is None and reason in why and "unpinned" in why


def test_explicit_lists():
    pin, _ = choose("0-1:2-7", set(range(8)))
    assert pin is not None
    assert pin.client_prefix() == ["taskset", "-c", "0-1"]
    assert pin.tool_prefix() == ["taskset", "-c", "2-7"]
    with pytest.raises(ValueError):
        choose("0-1", set(range(8)))


def test_without_taskset_it_runs_unpinned(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pinning.shutil, "which", lambda name: None)
    pin, why = choose("auto", set(range(8)))
    assert pin is None and "taskset" in why
