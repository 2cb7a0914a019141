"""The drain: how the supervisor ends the pipeline once the command has exited, and the
``Drain`` messages a dead stage owed its consumers.

Role at the end of a run: the stages that read the device are told to stop (an eventfd);
each stage then drains into the next and exits, front to back ([tun ->] tcp -> proxy ->
sink). :class:`Drainer` watches them while they do (``sigtimedwait`` on SIGCHLD, polling
their counters): it waits as long as anything moves or the sink is busy
(``drainrules.ProgressWatch``), ends a proxy that was given nothing but its shard's Drain
(``drainrules.proxy_is_idle``: it may still be importing its modules), and gives up,
stopping what is left, after ``DRAIN_STALL`` seconds without progress, at a signal (a
second Ctrl-C), or when the sink died. Whatever was lost is added to the run's ``lost``
list, which the supervisor says at exit.

Also before the drain: when a stage dies, its consumers still take what it published
(its ring is shared memory) and then the ``Drain`` it never sent, which the drainer
publishes on its behalf (:meth:`Drainer.owe`; a full ring is retried on each look).

The drainer acts on the stages through the supervisor (:class:`StageControl`: reap,
end one stage, stop them all), which keeps the list of stages and their exit statuses.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Protocol

from . import timeline
from .drainrules import ProgressWatch, proxy_is_idle
from ..plumbing.stats import MSGS_IN, MSGS_OUT

if TYPE_CHECKING:
    from ..plumbing.ring import Ring
    from ..plumbing.stats import SinkState
    from .supervisor import Child

DRAIN_STALL = 5.0        # seconds without progress after which the drain gives up
DRAIN_POLL = 0.1         # how often the drain looks at the stages' counters


class StageControl(Protocol):
    """What the drainer asks of the supervisor."""

    stopping: set[int]   # pids of stages ended on purpose

    def reap(self) -> list[Child]:
        """Collect every exited child (their statuses land in the stages' records)."""

    def end_stage(self, stage: Child) -> None:
        """SIGKILL one stage, on purpose."""

    def stop_stages(self, graceful: bool) -> None:
        """End every stage still running (``graceful``: SIGTERM first)."""


class Drainer:
    """Drains the pipeline at the end of a run; owes the Drain of dead stages."""

    def __init__(self, stages: list[Child], sink_state: SinkState, lost: list[str],
                 control: StageControl, watched: set[signal.Signals], tun_stage: bool) -> None:
        self.stages = stages          # the supervisor's list: stages come and go in it
        self.sink_state = sink_state
        self.lost = lost              # what output was lost (the supervisor says it)
        self.control = control
        self.watched = watched        # the signals that interrupt the drain (and SIGCHLD)
        self.tun_stage = tun_stage
        self.owed: list[Ring] = []    # Drain owed by a dead producer, not yet sent

    def consumer_of(self, ring: Ring) -> Child | None:
        return next((s for s in self.stages if ring in s.inputs), None)

    def owe(self, stage: Child) -> None:
        """``stage`` died: its consumers still take what it published, then the Drain it
        never sent."""
        for ring in stage.outputs:
            consumer = self.consumer_of(ring)
            if consumer is not None and consumer.status is None:
                self.owed.append(ring)
        self.send_owed()

    def send_owed(self) -> None:
        """Publish ``Drain`` into rings whose producer died (the ring may be full: the
        drain loop calls again)."""
        from ..plumbing import messages

        drain = messages.encode(messages.Drain())
        still_owed = []
        for ring in self.owed:
            consumer = self.consumer_of(ring)
            if consumer is None or consumer.status is not None:
                continue
            if not ring.try_put_many([drain]):
                still_owed.append(ring)
        self.owed = still_owed

    def run(self, stop_fd: int) -> None:
        """Ask the stages that read the device to stop (``stop_fd``); each stage then
        drains into the next and exits. Waits while anything makes progress (see the
        module docstring)."""
        if self._sink_dead():
            self.control.stop_stages(graceful=False)
            return
        os.eventfd_write(stop_fd, 1)
        watch = ProgressWatch(DRAIN_STALL, self._progress_mark(), time.monotonic())
        while any(s.status is None for s in self.stages):
            info = signal.sigtimedwait(self.watched, DRAIN_POLL)
            if info is not None and info.si_signo == signal.SIGCHLD:
                self.control.reap()
                self._end_idle_proxies()
            elif info is not None:
                # Ctrl-C (again), or a signal to httptap: stop now, writing what we can.
                self.lost.append(f"the drain was interrupted by {signal.Signals(info.si_signo).name}")
                self.control.stop_stages(graceful=True)
                return
            if self._sink_dead():
                self.control.stop_stages(graceful=False)
                return
            self.send_owed()
            if watch.stalled(self._progress_mark(), self.sink_state.busy, time.monotonic()):
                stuck = ", ".join(s.name for s in self.stages if s.status is None)
                print(f"httptap: the pipeline made no progress for {DRAIN_STALL:.0f}s "
                      f"(still running: {stuck}); stopping it", file=sys.stderr, flush=True)
                self.lost.append(f"the drain did not finish (stuck: {stuck})")
                self.control.stop_stages(graceful=True)
                return

    def _end_idle_proxies(self) -> None:
        """A proxy given nothing but its finished tcp shard's Drain holds nothing: end it
        rather than wait for it to start (it may still be importing its modules), and send
        its Drain to the sink on its behalf. A run without traffic drains at once."""
        if self.tun_stage:
            return  # its shards' counters also count what they send the tun stage
        for proxy in self.stages:
            tcp = next((s for s in self.stages
                        if s.name.startswith("tcp") and s.shard == proxy.shard), None)
            if (not proxy.name.startswith("proxy") or proxy.status is not None
                    or proxy.pid in self.control.stopping or tcp is None or tcp.status != 0
                    or tcp.counters is None or proxy.counters is None):
                continue
            if not proxy_is_idle(tcp.counters.v[MSGS_OUT], proxy.counters.v[MSGS_IN],
                                 proxy.counters.v[MSGS_OUT]):
                continue
            timeline.mark(f"{proxy.name} ended: it was given nothing")
            self.control.end_stage(proxy)
            try:
                _, status, rusage = os.wait4(proxy.pid, 0)
                proxy.status, proxy.cpu = status, rusage.ru_utime + rusage.ru_stime
            except ChildProcessError:
                pass  # reaped already
            if proxy.counters.v[MSGS_OUT] == 0:
                # (Had it published its own Drain uncounted, the sink would read a second
                # one from this ring, which changes nothing.)
                self.owed += [r for r in proxy.outputs if self.consumer_of(r)]
        self.send_owed()

    def _sink_dead(self) -> bool:
        """The sink ended without finishing (a signal, a failure). A sink that exited 0 has
        delivered every Drain; stages it does not read (the tun stage writing the pcap)
        may still be finishing, and are waited for like any other."""
        return any(s.name == "sink" and s.status not in (None, 0) for s in self.stages)

    def _progress_mark(self) -> tuple[object, ...]:
        """Changes whenever a stage moves a message or the sink delivers one."""
        return (self.sink_state.delivered,
                *(tuple(s.counters.v.tolist()) for s in self.stages
                  if s.counters is not None and s.status is None))
