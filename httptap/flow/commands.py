"""The flow core's vocabulary: the commands it queues for the proxy stage to carry out,
and the settings every flow of a proxy shares (see ``httptap.flow.core``).

    SendToCommand(data)    FlowData to the tcp stage    SendUpstream(data)  bytes for the socket
    FinToCommand()         FlowEof                      FinUpstream()       shutdown(SHUT_WR)
    ResetCommand(reason)   FlowReset                    CloseUpstream()     close when written
    Credit(count)          FlowAcked                    AbortUpstream()     reset (SO_LINGER 0)
    Report(message)        a message for the sink       Pause/ResumeUpstream()  reading
    SetTimer(deadline)     call timer() then (None: no timer)
    FlowOver()             the flow is over and reported: forget it (the tcp stage's
                           FlowClosed, later, finds nothing)

Commands are small slotted dataclasses, compared by value in the playbook tests; the ones
without fields are made once (``FIN_TO_COMMAND``...). The proxy stage matches them by
class (``stages.relay.Relay.execute``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..plumbing import messages


def endpoint(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- commands -------------------------------------------------------------------------------

@dataclass(slots=True)
class SendToCommand:
    data: bytes | memoryview  # may be a view of the stage's read buffer: use it at once


@dataclass(slots=True)
class FinToCommand:
    pass


@dataclass(slots=True)
class ResetCommand:
    reason: str


@dataclass(slots=True)
class Credit:
    count: int


@dataclass(slots=True)
class SendUpstream:
    data: bytes


@dataclass(slots=True)
class FinUpstream:
    pass


@dataclass(slots=True)
class CloseUpstream:
    pass


@dataclass(slots=True)
class AbortUpstream:
    pass


@dataclass(slots=True)
class PauseUpstream:
    pass


@dataclass(slots=True)
class ResumeUpstream:
    pass


@dataclass(slots=True)
class Report:
    message: messages.Msg


@dataclass(slots=True)
class SetTimer:
    deadline: float | None


@dataclass(slots=True)
class FlowOver:
    pass


Command = (SendToCommand | FinToCommand | ResetCommand | Credit | SendUpstream | FinUpstream
           | CloseUpstream | AbortUpstream | PauseUpstream | ResumeUpstream | Report | SetTimer
           | FlowOver)

# The commands without fields, made once.
FIN_TO_COMMAND = FinToCommand()
FIN_UPSTREAM = FinUpstream()
CLOSE_UPSTREAM = CloseUpstream()
ABORT_UPSTREAM = AbortUpstream()
PAUSE_UPSTREAM = PauseUpstream()
RESUME_UPSTREAM = ResumeUpstream()
FLOW_OVER = FlowOver()


@dataclass(slots=True)
class FlowSettings:
    """What every flow of a proxy shares: the run's options and the TLS context makers
    (``upstream_context(alpn)``: a verifying client context; ``server_context(name, alpn)``:
    a context with a certificate for ``name``, may raise ``CAError``)."""
    http_ports: frozenset[int]
    https_ports: frozenset[int]
    capture_bodies: bool
    stream_bodies: bool  # --body: heads of streamed responses go to the sink at once
    max_body_size: int  # what an observer keeps of each body (--max-body-size)
    verbose: bool
    new_exchange_id: Callable[[], int]
    upstream_context: Callable[[tuple[str, ...]], Any]
    server_context: Callable[[str, list[str] | None], Any]
    no_intercept: tuple[str, ...] = ()  # host globs (lower case) whose TLS is relayed untouched
    # Upstream TLS sessions to resume, per (ALPN offered, name, port): a new connection to a
    # server we spoke to skips the certificate exchange and its verification, as any TLS
    # client does. Oldest first (dicts keep order); at most MAX_SESSIONS.
    sessions: dict[tuple[tuple[str, ...], str, int], Any] = field(default_factory=dict)
    rejected_names: set[str] = field(default_factory=set)  # told once each: see _rejected
