"""The drain's rules (``run.drainrules``): a fake clock, no processes."""

from __future__ import annotations

from httptap.run.drainrules import ProgressWatch


def test_a_pipeline_that_moves_is_never_stalled():
    watch = ProgressWatch(5.0, mark=(0,), now=0.0)
    for t in range(1, 100):
        assert not watch.stalled((t,), busy=False, now=float(t * 4))  # 4 s between moves


def test_a_busy_sink_is_progress_however_long():
    """A sink blocked writing to a reader that comes late: the marks stand still."""
    watch = ProgressWatch(5.0, mark=(7,), now=0.0)
    assert not any(watch.stalled((7,), busy=True, now=t / 10) for t in range(1, 600))
    # Once it is idle and nothing moves, the patience starts from the last busy look.
    assert not watch.stalled((7,), busy=False, now=64.0)
    assert watch.stalled((7,), busy=False, now=65.0)  # 5.1 s after the last busy look (59.9)


def test_stalled_after_patience_without_progress():
    watch = ProgressWatch(5.0, mark=(1, 2), now=10.0)
    assert not watch.stalled((1, 2), busy=False, now=14.9)
    assert watch.stalled((1, 2), busy=False, now=15.0)
    assert not watch.stalled((1, 3), busy=False, now=16.0)  # moved again: patience resets
    assert not watch.stalled((1, 3), busy=False, now=20.9)
    assert watch.stalled((1, 3), busy=False, now=21.0)


# --- --stats-interval on a terminal: one block, refreshed in place ---------------------------

def test_stats_tables_redraw_in_place_on_a_terminal_only_while_nothing_else_was_written():
    from httptap.run.supervisor import StatsRedraw

    table = "stage  cpu s\ntcp     0.01\nproxy   0.02"
    redraw = StatsRedraw()
    assert redraw.frame(table, True, delivered=5) == table          # the first: printed whole
    assert redraw.frame(table, True, delivered=5) == "\x1b[3F\x1b[J" + table  # over it
    assert redraw.frame(table + "\nsink 0", True, delivered=6) == table + "\nsink 0"  # lines came
    assert redraw.frame(table, True, delivered=6) == "\x1b[4F\x1b[J" + table  # its own height
    piped = StatsRedraw()
    assert piped.frame(table, False, 1) == table and piped.frame(table, False, 1) == table


def test_a_proxy_is_idle_only_when_given_just_the_drain_and_silent():
    from httptap.run.drainrules import proxy_is_idle

    assert proxy_is_idle(tcp_sent=1, proxy_received=0, proxy_sent=0)
    assert not proxy_is_idle(tcp_sent=2, proxy_received=0, proxy_sent=0)   # a flow, then Drain
    assert not proxy_is_idle(tcp_sent=1, proxy_received=1, proxy_sent=0)   # it took the Drain
    assert not proxy_is_idle(tcp_sent=1, proxy_received=0, proxy_sent=1)   # it said something
    assert not proxy_is_idle(tcp_sent=0, proxy_received=0, proxy_sent=0)   # no Drain yet
