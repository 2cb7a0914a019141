"""The command's ClientHello answered ahead (``FlowCore._answer_ahead``): while the server
works on our ClientHello, the command's session is made and its answer held; it is sent
only once the server's handshake succeeded with the protocol expected, and never when the
handshake fails or the server chooses another protocol.

Real ``ssl`` objects on both sides over memory BIOs, as in test_flowcore.py (TlsWorld)."""

from __future__ import annotations

import ssl

from httptap.flow.commands import (ABORT_UPSTREAM, FIN_TO_COMMAND, SendToCommand, SendUpstream,
                                   SetTimer)
from httptap.flow.core import MAX_SESSIONS, TLS_HANDSHAKE_TIMEOUT, Mode
from test_flowcore import NAME, REQUEST, RESPONSE, T0, TlsWorld

ALERT = 0x15  # the TLS record type of an alert (RFC 8446 §5.1)


def _hello_to_core(world: TlsWorld) -> list[object]:
    """The command's ClientHello given to the core: the commands it queued (what it sent
    upstream is carried to the server)."""
    try:
        world.command[0].do_handshake()
    except ssl.SSLWantReadError:
        pass
    world.core.command_data(world.command[2].read(), T0)
    cmds = list(world.core.take())
    for cmd in cmds:
        if isinstance(cmd, SendUpstream):
            world.server[1].write(cmd.data)
    return cmds


def _exchange(world: TlsWorld) -> None:
    world.command[0].write(REQUEST)
    _, server_got = world.pump()
    assert server_got == REQUEST
    world.server[0].write(RESPONSE)
    command_got, _ = world.pump()
    assert command_got == RESPONSE


def test_without_alpn_the_answer_is_made_ahead_and_held_until_the_server_is_done(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"], client_alpn=())
    cmds = _hello_to_core(world)
    # Our ClientHello goes out; nothing reaches the command before the server answered.
    assert isinstance(cmds[0], SendUpstream) and cmds[1] == SetTimer(T0 + TLS_HANDSHAKE_TIMEOUT)
    assert not any(isinstance(c, SendToCommand) for c in cmds)
    ahead = world.core.ahead
    assert ahead is not None and ahead.alpn == "" and ahead.answer
    world.pump()
    assert world.command_error is None and world.core.mode is Mode.TLS
    assert world.core.tls is ahead.tls and world.core.ahead is None
    assert world.command[0].selected_alpn_protocol() is None
    assert world.command[0].getpeercert()["subjectAltName"] == (("DNS", NAME),)
    _exchange(world)


def test_with_alpn_the_servers_last_choice_is_expected(tmp_path):
    first = TlsWorld(tmp_path, server_alpn=["h2", "http/1.1"])
    assert not any(isinstance(c, SendToCommand) for c in _hello_to_core(first))
    assert first.core.ahead is None  # the server's choice is not known yet
    first.pump()
    key = (("h2", "http/1.1"), NAME, 443)
    assert first.core.settings.chosen_alpn == {key: "h2"}
    again = TlsWorld(tmp_path, server_alpn=["h2", "http/1.1"], same_proxy_as=first)
    _hello_to_core(again)
    ahead = again.core.ahead
    assert ahead is not None and ahead.alpn == "h2"
    again.pump()
    assert again.command_error is None and again.core.tls is ahead.tls
    assert again.command[0].selected_alpn_protocol() == "h2"


def test_another_choice_by_the_server_drops_the_answer_made_ahead(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    key = (("h2", "http/1.1"), NAME, 443)
    world.core.settings.chosen_alpn[key] = "h2"  # as if the server had chosen h2 last time
    _hello_to_core(world)
    ahead = world.core.ahead
    assert ahead is not None and ahead.alpn == "h2"
    world.pump()
    assert world.command_error is None and world.core.mode is Mode.TLS
    assert world.core.tls is not ahead.tls
    assert world.command[0].selected_alpn_protocol() == "http/1.1"  # the server's choice
    assert world.core.settings.chosen_alpn == {key: "http/1.1"}
    _exchange(world)


def test_an_upstream_that_fails_verification_gives_only_the_alert(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"], trusted=False, client_alpn=())
    hello_cmds = _hello_to_core(world)
    assert world.core.ahead is not None
    assert not any(isinstance(c, SendToCommand) for c in hello_cmds)
    try:
        world.server[0].do_handshake()
    except ssl.SSLWantReadError:
        pass
    world.core.upstream_data(world.server[2].read(), T0)
    cmds = world.core.take()
    to_command = [c.data for c in cmds if isinstance(c, SendToCommand)]
    assert len(to_command) == 1 and to_command[0][0] == ALERT  # no certificate of ours
    assert world.core.mode is Mode.REFUSED and world.core.ahead is None
    assert cmds[-2:] == [FIN_TO_COMMAND, ABORT_UPSTREAM]
    world.command[1].write(to_command[0])
    try:
        world.command[0].do_handshake()
    except ssl.SSLError as exc:
        assert "BAD_CERTIFICATE" in str(exc).upper()
    else:
        raise AssertionError("the command's handshake succeeded")


def test_a_silent_upstream_times_out_with_only_the_alert(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"], client_alpn=())
    hello_cmds = _hello_to_core(world)
    assert world.core.ahead is not None
    assert not any(isinstance(c, SendToCommand) for c in hello_cmds)
    world.core.timer(T0 + TLS_HANDSHAKE_TIMEOUT)
    cmds = world.core.take()
    to_command = [c.data for c in cmds if isinstance(c, SendToCommand)]
    assert len(to_command) == 1 and to_command[0][0] == ALERT
    assert world.core.ahead is None


def test_the_servers_choices_are_remembered_for_at_most_max_sessions_keys(tmp_path):
    world = TlsWorld(tmp_path, server_alpn=["http/1.1"])
    remembered = world.core.settings.chosen_alpn
    for i in range(MAX_SESSIONS):
        remembered[((), f"old{i}.test", 443)] = ""
    world.pump()
    assert len(remembered) == MAX_SESSIONS
    assert ((), "old0.test", 443) not in remembered  # the oldest went
    assert remembered[(("h2", "http/1.1"), NAME, 443)] == "http/1.1"
