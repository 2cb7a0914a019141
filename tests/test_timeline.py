"""The start-up timeline that -v prints (httptap.run.timeline): marks kept until -v is
known, then printed as they happen; and, end to end, every step of a run in its order."""

from __future__ import annotations

import importlib
import re

import pytest
from runner import run_httptap

from httptap.run import timeline

LINE = re.compile(r"^httptap: \[\s*(\d+\.\d) ms\] (\S+)\s+(.+?)\s+\(cpu\s+\d+\.\d ms\)$")


@pytest.fixture
def fresh_timeline():
    """A timeline as just imported (the module keeps its state in globals)."""
    yield importlib.reload(timeline)
    importlib.reload(timeline)


def marks(text: str) -> list[tuple[float, str, str]]:
    return [(float(m[1]), m[2], m[3]) for m in map(LINE.match, text.splitlines()) if m]


def test_marks_before_enable_print_when_enabled_then_marks_print_at_once(fresh_timeline, capfd):
    fresh_timeline.mark("imports done")
    assert capfd.readouterr().err == ""
    fresh_timeline.enable(True)
    early = marks(capfd.readouterr().err)
    assert [(who, what) for _, who, what in early] == [
        ("supervisor", "interpreter up"), ("supervisor", "imports done")]
    fresh_timeline.process("launcher")
    fresh_timeline.mark("TUN device up")
    late = marks(capfd.readouterr().err)
    assert [(who, what) for _, who, what in late] == [("launcher", "TUN device up")]
    times = [t for t, _, _ in early + late]
    assert times == sorted(times) and times[0] >= 0


def test_without_verbose_nothing_is_printed_or_kept(fresh_timeline, capfd):
    fresh_timeline.mark("imports done")
    fresh_timeline.enable(False)
    fresh_timeline.mark("exit 0")
    assert capfd.readouterr().err == ""
    assert fresh_timeline._pending is None


@pytest.mark.root
def test_verbose_run_shows_each_step_of_every_process_in_order():
    r = run_httptap("-v", "--", "true")
    assert r.returncode == 0, r.stderr
    seen = [(who, what) for _, who, what in marks(r.stderr)]
    for step in [("supervisor", "interpreter up"), ("supervisor", "options parsed"),
                 ("ca", "CA ready"), ("launcher", "namespaces made"),
                 ("launcher", "TUN device up"), ("command", "exec"), ("tcp", "ready"),
                 ("sink", "ready"),
                 ("supervisor", "drain done"), ("supervisor", "exit 0")]:
        assert step in seen, (step, r.stderr)
    order = [seen.index(s) for s in [("supervisor", "options parsed"),
                                     ("launcher", "TUN device up"), ("command", "exec"),
                                     ("supervisor", "drain done"), ("supervisor", "exit 0")]]
    assert order == sorted(order), r.stderr


@pytest.mark.root
def test_without_verbose_a_run_prints_no_timeline():
    r = run_httptap("--", "true")
    assert r.returncode == 0, r.stderr
    assert marks(r.stderr) == []


@pytest.mark.root
def test_verbose_into_a_pipe_closed_early_keeps_the_commands_status():
    """The timeline's lines are written where a closed pipe means EPIPE, never SIGPIPE (the
    command's own SIGPIPE is back to its default only after its last line)."""
    import subprocess
    import sys

    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    try:
        r = subprocess.run([sys.executable, "-m", "httptap", "-v", "--", "sh", "-c", "exit 4"],
                           stderr=reader.stdin, stdout=subprocess.DEVNULL, timeout=60,
                           start_new_session=True)
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
    assert r.returncode == 4
