"""The supervisor: the httptap process itself. Starts the pipeline, runs the command, exits.

Start-up, in the order of the forks (``-v`` prints when each step happens: run.timeline):

    launcher (fork)      -> forked first, before the options are parsed (run.early):
                            imports pyroute2 meanwhile; given the options: namespaces,
                            TUN device (handed over at once), then waits for the trust
                            files, mounts them and becomes the command
    trust maker (fork)   -> forked first too, imports cryptography meanwhile; given the
                            run: its CA (to each proxy through a pipe) and the trust files
    sink, proxy×N (fork) -> started while the launcher builds the namespace
    tcp×N (fork)         -> started once the launcher has handed over the TUN device: each
                            shard reads and writes its own queue of it
    tun (fork)           -> only with --dump-pcap: reads the device, steers to the shards

The command does not wait for the stages: what it sends before they read waits in the
device's queue.

Then one loop over signals (``sigtimedwait``; every signal we care about is blocked, so
none interrupts anything): SIGCHLD reaps children, SIGINT/SIGTERM/SIGHUP/SIGQUIT sent to
httptap are passed to the command. When the command exits the pipeline drains front to
back ([tun ->] tcp -> proxy -> sink; ``run.drain``) and httptap exits with the command's
status.

Nothing observed is lost silently:

- The drain waits as long as the pipeline makes progress: any stage's counters move, or
  the sink is busy (a slow reader of its output blocks it; like any program writing into
  a pipe, httptap then waits for the reader). It gives up after ``DRAIN_STALL`` seconds
  without progress; a signal during the drain (a second Ctrl-C) ends it at once.
- The sink outlives the others. If a tcp, proxy or tun stage dies, httptap names it,
  stops the command, sends ``Drain`` on the dead stage's behalf into the rings it fed
  (its ring is shared memory: what it published is still there, and a dead producer
  cannot race us), and drains the rest; the sink then writes everything, the HAR with
  the exchanges still open marked as errors. A proxy's tcp shard is stopped with it.
- If the sink dies, the HAR files are written here from the spools it left in the run
  directory (``sinks.har``).
- Whatever was lost (a dead stage, a cut-short drain, a failed write) is said in one line
  at the end, and a command that exited 0 gives 125.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING
from dataclasses import dataclass

from . import timeline
from .config import Config
from .drain import DRAIN_STALL, Drainer  # noqa: F401 - DRAIN_STALL: for the tests
from .early import LAUNCHER, WATCHED, block_signals
from .early import take as take_early
from .rundir import RUN_DIR_PREFIX, make_run_dir  # noqa: F401 - RUN_DIR_PREFIX: for the tests
from .statsview import StatsRedraw, cpu_of, isatty
from ..plumbing.ring import Ring
from ..plumbing.stats import (Counters, SinkState, StageReport, format_table,
                              stats_record)

if TYPE_CHECKING:
    from ..tls.pending import PendingCA
    from .trustmaker import TrustMaker

EXIT_FAILED = 125
COMMAND_GRACE = 2.0      # seconds between SIGTERM and SIGKILL when we stop the command
RING_CAPACITY = 4 << 20

SI_USER, SI_QUEUE = 0, -1  # si_code of kill(2) and sigqueue(3): sent by a process


@dataclass
class Child:
    name: str
    pid: int
    counters: Counters | None = None
    outputs: tuple[Ring, ...] = ()
    inputs: tuple[Ring, ...] = ()
    shard: int | None = None
    status: int | None = None
    cpu: float = 0.0


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def exit_code(status: int) -> int:
    """The shell's convention: the exit status, or 128 + the signal that killed it."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stages: list[Child] = []
        self.command: Child | None = None
        self.started = time.monotonic()
        self.rings: list[Ring] = []
        self._fds_to_close_in_stages: list[int] = []
        self.sink_state = SinkState()
        self._stats_redraw = StatsRedraw()
        self.lost: list[str] = []             # what output was lost, said at exit
        self.draining = False
        self.stopping: set[int] = set()      # pids of stages we end on purpose
        self.drainer = Drainer(self.stages, self.sink_state, self.lost, self, WATCHED,
                               config.tun_stage)
        self.pending_cas: list[PendingCA] = []  # the CA's way to each proxy (tls.pending)
        self.trust_maker: TrustMaker | None = None

    # --- start-up ----------------------------------------------------------------------

    def _ring(self, label: str) -> Ring:
        ring = Ring(RING_CAPACITY, label=label)
        self.rings.append(ring)
        return ring

    def _start(self, name: str, module: str, inputs: list[Ring], outputs: list[Ring],
               keep_fds: tuple[int, ...] = (), **extra: object) -> Child:
        """Fork stage ``name`` running ``httptap.stages.<module>.run`` (imported in the
        child: each stage pays for its own imports, in parallel). ``keep_fds``: of the
        descriptors meant for other stages, those this one keeps."""
        from ..stages.base import StageContext, start_stage

        counters = Counters()
        ctx = StageContext(name, self.config, counters, inputs, outputs, dict(extra))
        close = [fd for fd in self._fds_to_close_in_stages if fd not in keep_fds]
        pid = start_stage(ctx, module, close)
        timeline.mark(f"{name} forked")
        shard = extra.get("shard")
        child = Child(name, pid, counters, tuple(outputs), tuple(inputs),
                      shard if isinstance(shard, int) else None)
        self.stages.append(child)
        return child

    def _make_run_dir(self) -> None:
        self.run_dir = make_run_dir()
        self.spool_dir = os.path.join(self.run_dir, "spool")
        os.mkdir(self.spool_dir, 0o700)  # HAR entries: bodies, cookies

    def run(self) -> int:
        try:
            return self._run()
        finally:
            if self.trust_maker is not None:
                self.trust_maker.stop()
            self._remove_run_dir()
            for pending in self.pending_cas:
                pending.close()

    def _remove_run_dir(self) -> None:
        if getattr(self, "run_dir", None):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _run(self) -> int:
        config = self.config
        block_signals()
        try:
            self._make_run_dir()
        except OSError as exc:
            print(f"httptap: {exc}", file=sys.stderr)
            return EXIT_FAILED
        # The launcher and the trust maker were forked first and have imported their
        # modules meanwhile (run.early): give them the run.
        launcher = take_early(LAUNCHER)
        parent_sock = launcher.sock
        try:
            launcher.start(config)
        except OSError:
            pass  # it died: _map_ids or _start_shards hear it and say so
        self.command = Child("command", launcher.pid)
        timeline.mark("launcher started")
        self._fds_to_close_in_stages.append(parent_sock.fileno())
        self.uid, self.gid = os.getuid(), os.getgid()
        try:
            self._start_trust_maker()
            # The launcher's first step needs us (a moment); while it builds the
            # namespace, start the proxies and the sink (they import their modules in
            # parallel), then the tcp shards once the TUN device exists; then pass the
            # trust files on to the launcher.
            if config.new_user_namespace and not self._map_ids(parent_sock):
                return EXIT_FAILED
            self._start_sink_and_proxies()
            if not self._start_shards(parent_sock):
                return EXIT_FAILED
            if not self._send_trust(parent_sock):
                return EXIT_FAILED
            # The launcher runs the command as soon as its mounts are done; its last
            # message says whether they were.
            msg = parent_sock.recv(65536)
            if msg[:1] != b"R":
                self._launcher_failed(msg)
                return EXIT_FAILED
            timeline.mark("launcher ready")
            self._print_notes(msg)
            gc.enable()  # off during start-up (httptap.__main__)
            return self._wait()
        finally:
            parent_sock.close()
            for ring in self.rings:
                ring.release()

    def _start_trust_maker(self) -> None:
        from ..tls.pending import PendingCA
        from .trustmaker import TrustMaker

        # Each proxy gets the CA through a pipe of its own once it exists (tls.pending).
        self.pending_cas = [PendingCA(self.config.keylog) for _ in range(self.config.workers)]
        self.trust_maker = TrustMaker(self.config, self.run_dir, self.pending_cas)
        self.trust_maker.start(close_fds=self._fds_to_close_in_stages)
        # Open until the end of the run (closed earlier, their numbers could be reused by
        # a descriptor a stage must keep).
        self._fds_to_close_in_stages += [p.read_fd for p in self.pending_cas]
        self._fds_to_close_in_stages.append(self.trust_maker.report_fd)

    def _start_sink_and_proxies(self) -> None:
        config = self.config
        n = config.workers
        self.tun_to_tcp = [self._ring(f"tun>tcp{i}") for i in range(n)] if config.tun_stage else []
        self.tcp_to_tun = [self._ring(f"tcp{i}>tun") for i in range(n)] if config.tun_stage else []
        self.tcp_to_proxy = [self._ring(f"tcp{i}>proxy{i}") for i in range(n)]
        self.proxy_to_tcp = [self._ring(f"proxy{i}>tcp{i}") for i in range(n)]
        proxy_to_sink = [self._ring(f"proxy{i}>sink") for i in range(n)]
        self.suffixes = [str(i) if n > 1 else "" for i in range(n)]
        # The sink also hears from the supervisor: periodic stats for ndjson sinks.
        self.to_sink = self._ring("supervisor>sink")
        # The proxies first: they have the most to import.
        for i in range(n):
            self._start("proxy" + self.suffixes[i], "proxy", [self.tcp_to_proxy[i]],
                        [self.proxy_to_tcp[i], proxy_to_sink[i]],
                        keep_fds=(self.pending_cas[i].read_fd,), shard=i, ca=self.pending_cas[i])
        self._start("sink", "sink", [*proxy_to_sink, self.to_sink], [],
                    state=self.sink_state, spool_dir=self.spool_dir)
        self.stages.insert(0, self.stages.pop())  # listed first, as --stats shows it

    def _start_shards(self, sock: socket.socket) -> bool:
        """Receive the TUN device (one fd per queue) and start the tcp shards (and the tun
        stage) on it; False, said and cleaned up, if the launcher failed instead."""
        config = self.config
        n = config.workers
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 65536, config.tun_queues)
        except OSError as exc:
            msg, fds = b"E" + f"launcher failed: {exc}".encode(), []
        timeline.mark("TUN device received")
        if not msg or msg[:1] != b"T" or len(fds) != config.tun_queues:
            for fd in fds:
                os.close(fd)
            self._launcher_failed(msg)
            return False
        self._print_notes(msg)
        stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.stop_fd = stop_fd
        suffixes = self.suffixes
        # The shards write their packets to the device themselves (one hop less for every
        # byte the command receives) and, without a tun stage, read their own queue too.
        for i in range(n):
            if config.tun_stage:
                self._start("tcp" + suffixes[i], "tcp", [self.tun_to_tcp[i], self.proxy_to_tcp[i]],
                            [self.tcp_to_tun[i], self.tcp_to_proxy[i]], shard=i, tun_fd=fds[0])
            else:
                self._start("tcp" + suffixes[i], "tcp", [self.proxy_to_tcp[i]],
                            [self.tcp_to_proxy[i]], shard=i, tun_fd=fds[i], reads_tun=True,
                            stop_fd=stop_fd)
        if config.tun_stage:
            self._start("tun", "tun", self.tcp_to_tun, self.tun_to_tcp, tun_fd=fds[0],
                        stop_fd=stop_fd)
        for fd in fds:
            os.close(fd)  # the stages hold them now
        return True

    def _print_notes(self, msg: bytes) -> None:
        """The launcher's notes after its message's first byte, for --verbose."""
        notes = msg[1:].decode(errors="replace")
        if notes and self.config.verbose:
            for line in notes.splitlines():
                print(f"httptap: {line}", file=sys.stderr)

    def _map_ids(self, sock: socket.socket) -> bool:
        """Write the launcher's uid/gid maps when it asks ("U"); False if it failed."""
        from .namespace import write_id_maps

        assert self.command is not None
        msg = sock.recv(65536)
        if msg != b"U":
            self._launcher_failed(msg)
            return False
        try:
            write_id_maps(self.command.pid, self.uid, self.gid)
            sock.send(b"u")
        except OSError as exc:
            sock.send(b"E" + f"cannot map user ids into the new user namespace: {exc}".encode())
        return True

    def _send_trust(self, sock: socket.socket) -> bool:
        """Pass the trust maker's files on to the launcher; False if it failed."""
        assert self.trust_maker is not None
        self._fds_to_close_in_stages.remove(self.trust_maker.report_fd)  # closed by result()
        msg = self.trust_maker.result()
        timeline.mark("trust files received")
        if msg[:1] != b"t":
            self._abort(sock, msg[1:].decode(errors="replace"))
            return False
        try:
            sock.send(msg)
        except OSError:
            pass  # the launcher failed: its message follows
        return True

    def _abort(self, sock: socket.socket, text: str) -> int:
        """Our own set-up failed: tell the launcher (it exits without running the
        command), say why, and end the stages."""
        try:
            sock.send(b"E" + text.encode())
        except OSError:
            pass
        print(f"httptap: {text}", file=sys.stderr)
        self._reap_command(block=True)
        self.stop_stages(graceful=False)
        return EXIT_FAILED

    def _launcher_failed(self, msg: bytes) -> None:
        text = msg[1:].decode(errors="replace") if msg else "the launcher died before setting up the namespace"
        print(f"httptap: {text}", file=sys.stderr)
        self._reap_command(block=True)
        self.stop_stages(graceful=False)

    # --- the main loop -------------------------------------------------------------------

    def _wait(self) -> int:
        assert self.command is not None
        command = self.command
        interval = self.config.stats_interval or None
        next_stats = time.monotonic() + interval if interval else None
        while True:
            timeout = None if next_stats is None else max(0.0, next_stats - time.monotonic())
            info = signal.sigtimedwait(WATCHED, timeout) if timeout is not None else signal.sigwaitinfo(WATCHED)
            if info is None:
                self._print_stats()
                next_stats = time.monotonic() + interval if interval else None
                continue
            if info.si_signo == signal.SIGCHLD:
                self.reap()
                if self.lost:  # a stage died: what the others hold still goes out
                    self._stop_command()
                    break
                if command.status is not None:
                    timeline.mark("command exited (launcher reaped)")
                    # The launcher exits when the namespace's PID 1 does: after the command,
                    # or with --no-exit, after the interrupt that ends the run.
                    break
            elif info.si_code in (SI_USER, SI_QUEUE):
                # Sent to httptap by another process: pass it on. A signal from the
                # terminal (Ctrl-C) reached the command's process group already.
                try:
                    os.kill(command.pid, info.si_signo)
                except ProcessLookupError:
                    pass
        stage_died_first = bool(self.lost)
        self.draining = True
        self.drainer.run(self.stop_fd)
        timeline.mark("drain done")
        self._write_left_spools()
        if self.config.stats:
            self._print_stats(final=True)
        # The command's own status, unless we stopped it because a stage died.
        code = EXIT_FAILED if stage_died_first else exit_code(command.status or 0)
        return self._report_lost(code)

    def _report_lost(self, code: int) -> int:
        """Say in one line what output was lost, if any; 125 instead of a success."""
        lost = list(self.lost)
        failed = self.sink_state.failed_writes
        if failed:
            lost.append(f"{failed} write{'s' if failed > 1 else ''} to the output failed")
        if not lost:
            return code
        print(f"httptap: output is incomplete: {'; '.join(lost)}", file=sys.stderr, flush=True)
        return EXIT_FAILED if code == 0 else code

    def reap(self) -> list[Child]:
        """Collect every exited child; handle and return the stages among them."""
        ended: list[Child] = []
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for child in [self.command, *self.stages]:
                if child is not None and child.pid == pid:
                    child.status = status
                    child.cpu = rusage.ru_utime + rusage.ru_stime
                    if child is not self.command:
                        ended.append(child)
            # Anything else (an orphan re-parented to us) is simply reaped.
        for stage in ended:
            self._stage_ended(stage)
        return ended

    def _stage_ended(self, stage: Child) -> None:
        """A stage exited: fine when it finished its drain or when we ended it; otherwise
        it died, and what it was carrying is lost, but not what the others carry."""
        # Once one stage has died the others drain too (from the Drain we sent for it).
        finished = stage.status == 0 and (self.draining or bool(self.lost))
        if finished or stage.pid in self.stopping:
            return
        how = _describe_status(stage.status or 0)
        stopping = "; stopping" if self.command is not None and self.command.status is None else ""
        print(f"httptap: the {stage.name} stage {how}{stopping}", file=sys.stderr, flush=True)
        self.lost.append(f"the {stage.name} stage {how}")
        if stage.name == "sink":
            return  # nothing can be delivered any more: see run.drain
        # Its consumers still take what it published, then the Drain it never sent.
        self.drainer.owe(stage)
        if stage.name.startswith("proxy"):
            # Its tcp shard would wait forever to hand its own Drain to it, and holds
            # nothing for the output.
            for other in self.stages:
                if other.name.startswith("tcp") and other.shard == stage.shard:
                    self.end_stage(other)

    def end_stage(self, stage: Child) -> None:
        if stage.status is None:
            self.stopping.add(stage.pid)
            try:
                os.kill(stage.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _reap_command(self, block: bool) -> None:
        assert self.command is not None
        if self.command.status is None:
            try:
                _, status = os.waitpid(self.command.pid, 0 if block else os.WNOHANG)
                self.command.status = status
            except ChildProcessError:
                self.command.status = 0

    # --- shutting down --------------------------------------------------------------------

    def _write_left_spools(self) -> None:
        """Write each HAR file whose spool the sink left: it died, or was stopped."""
        specs = [(i, spec[4:]) for i, spec in enumerate(self.config.sinks)
                 if spec.startswith("har:")]
        if not specs:
            return
        from ..sinks.har import assemble_spool, spool_path

        for index, path in specs:
            try:
                count = assemble_spool(spool_path(self.spool_dir, index), path)
            except Exception as exc:  # noqa: BLE001 - say so, and go on with the others
                self.lost.append(f"writing {path} failed: {exc}")
                continue
            if count is not None and self.config.verbose:
                print(f"httptap: wrote {path} ({count} entries) from the sink's spool",
                      file=sys.stderr, flush=True)

    def _stop_command(self) -> None:
        assert self.command is not None
        if self.command.status is not None:
            return
        try:
            os.kill(self.command.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + COMMAND_GRACE
        while self.command.status is None and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.05)
            self.reap()
        if self.command.status is None:
            try:
                os.kill(self.command.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap_command(block=True)

    def stop_stages(self, graceful: bool) -> None:
        """Kill every stage still running. ``graceful``: SIGTERM first, so the sink can
        still write its files, then SIGKILL after a second."""
        self.stopping.update(s.pid for s in self.stages if s.status is None)
        if graceful:
            self._signal_stages(signal.SIGTERM)
            deadline = time.monotonic() + 1.0
            while any(s.status is None for s in self.stages) and time.monotonic() < deadline:
                signal.sigtimedwait({signal.SIGCHLD}, 0.05)
                self.reap()
        self._signal_stages(signal.SIGKILL)
        for stage in self.stages:
            if stage.status is None:
                try:
                    _, status, rusage = os.wait4(stage.pid, 0)
                    stage.status = status
                    stage.cpu = rusage.ru_utime + rusage.ru_stime
                except ChildProcessError:
                    stage.status = 0

    def _signal_stages(self, sig: int) -> None:
        for stage in self.stages:
            if stage.status is None:
                try:
                    os.kill(stage.pid, sig)
                except ProcessLookupError:
                    pass

    # --- --stats -----------------------------------------------------------------------------

    def _print_stats(self, final: bool = False) -> None:
        reports = self._stage_reports()
        elapsed = time.monotonic() - self.started
        out = sys.stderr if self.config.use_stderr or "terminal" not in self.config.sinks else sys.stdout
        table = format_table(reports, elapsed)
        print(self._stats_redraw.frame(table, isatty(out), self.sink_state.delivered),
              file=out, flush=True)
        record = stats_record(reports, elapsed)
        if final:
            self._write_stats_records(record)
        elif any(s.startswith("ndjson") for s in self.config.sinks):
            from ..plumbing import messages

            snapshot = messages.StatsSnapshot(record["elapsed_s"], record["stages"])  # type: ignore[arg-type]
            self.to_sink.try_put_many([messages.encode(snapshot)])  # a full ring: skip this one

    def _write_stats_records(self, record: dict[str, object]) -> None:
        """The final ``stats`` line of each ndjson sink. Written here, after the sink stage
        has exited (it cannot know the stages' final counters and CPU time)."""
        line = json.dumps(record) + "\n"
        for spec in self.config.sinks:
            kind, _, path = spec.partition(":")
            if kind != "ndjson":
                continue
            try:
                if path and path != "-":
                    with open(path, "a") as f:
                        f.write(line)
                else:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            except OSError as exc:
                print(f"httptap: cannot write stats to {path or 'stdout'}: {exc}", file=sys.stderr)

    def _stage_reports(self) -> list[StageReport]:
        reports = []
        for stage in self.stages:
            assert stage.counters is not None
            cpu = stage.cpu if stage.status is not None else cpu_of(stage.pid)
            ring_stats = [r.stats() for r in stage.outputs]
            reports.append(StageReport(
                name=stage.name, counters=stage.counters.snapshot(), cpu_seconds=cpu,
                ring_high_water=max((s["high_water"] / r.capacity
                                     for s, r in zip(ring_stats, stage.outputs)), default=0.0),
                ring_wait_seconds=sum(s["wait_ns"] for s in ring_stats) / 1e9,
                ring_waits=sum(s["waits"] for s in ring_stats),
            ))
        return reports


def run_supervisor(config: Config) -> int:
    return Supervisor(config).run()
