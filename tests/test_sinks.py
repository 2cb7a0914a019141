"""The output formatters (``httptap.sinks``): feed message objects, check the exact output."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from haralyzer import HarPage, HarParser  # type: ignore[import-untyped]

from httptap.run.config import Config
from httptap.plumbing.messages import (DnsExchange, HttpRequest, HttpResponse, TcpSummary, WsEnd,
                              WsMessage)
from httptap.sinks import HarSink, NdjsonSink, TerminalSink, make_sinks
from httptap.sinks import common
from httptap.sinks.bodies import Bodies

T0 = 1_700_000_000.5  # 2023-11-14T22:13:20.500Z

BLUE, GREEN, MAGENTA, YELLOW, RED, RESET = (
    "\x1b[34m", "\x1b[32m", "\x1b[35m", "\x1b[33m", "\x1b[31m", "\x1b[0m")


def req(exchange: int = 1, *, method: str = "GET", url: str = "https://example.com/",
        headers: list[tuple[str, str]] | None = None, time: float = T0,
        **kw: Any) -> HttpRequest:
    return HttpRequest(exchange=exchange, time=time, method=method, url=url,
                       version="HTTP/1.1",
                       headers=headers if headers is not None else [("Host", "example.com")],
                       client="10.1.1.100:40000", server="93.184.215.14:443", **kw)


def resp(exchange: int = 1, *, status: int = 200, reason: str = "OK",
         headers: list[tuple[str, str]] | None = None, body: bytes | None = None,
         request_body: bytes | None = None, decoded_size: int | None = None,
         body_size: int | None = None, time: float = T0 + 0.5, request_truncated: bool = False,
         truncated: bool = False, request_body_size: int | None = None,
         **kw: Any) -> tuple[HttpResponse, Bodies]:
    """A response and the bodies the sink stage hands over with it: ``sink.response(*resp())``."""
    size = len(body) if body is not None else 1256
    message = HttpResponse(
        exchange=exchange, time=time, status=status, reason=reason, version="HTTP/1.1",
        headers=headers if headers is not None else [("Content-Type", "text/html")],
        request_body_size=(len(request_body or b"") if request_body_size is None
                           else request_body_size),
        body_size=size if body_size is None else body_size,
        decoded_size=size if decoded_size is None else decoded_size,
        request_body_truncated=request_truncated, body_truncated=truncated, **kw)
    return message, Bodies(request_body or b"", body or b"", request_truncated, truncated)


class FlushCounter(io.StringIO):
    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.flushes = 0
        self.tty = tty

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def isatty(self) -> bool:
        return self.tty


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


# --- terminal ------------------------------------------------------------------------------

def test_terminal_spec_lines() -> None:
    out = io.StringIO()
    sink = TerminalSink(out)
    sink.request(req())
    sink.response(*resp())
    sink.close()
    assert lines(out) == [
        "---> GET https://example.com/",
        "<--- 200 https://example.com/ (1256 bytes)",
    ]
    assert sink._requests == {}  # the request is forgotten once answered


def test_terminal_count_is_decoded_size_and_url_is_the_requests() -> None:
    out = io.StringIO()
    sink = TerminalSink(out)
    sink.request(req(1, url="http://a.test:8080/x"))
    sink.request(req(2, url="https://b.test/y?q=1"))
    sink.response(*resp(2, status=404, body_size=100, decoded_size=300))
    sink.response(*resp(1, status=301))
    assert lines(out) == [
        "---> GET http://a.test:8080/x",
        "---> GET https://b.test/y?q=1",
        "<--- 404 https://b.test/y?q=1 (300 bytes)",
        "<--- 301 http://a.test:8080/x (1256 bytes)",
    ]


def test_terminal_head() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, head=True)
    sink.request(req(headers=[("Host", "example.com"), ("Accept", "*/*"), ("X-A", "1")]))
    sink.response(*resp(headers=[("Content-Type", "text/html"), ("Set-Cookie", "a=1"),
                                ("Set-Cookie", "b=2")]))
    assert lines(out) == [
        "---> GET https://example.com/",
        "> Host: example.com",
        "> Accept: */*",
        "> X-A: 1",
        "<--- 200 https://example.com/ (1256 bytes)",
        "< Content-Type: text/html",
        "< Set-Cookie: a=1",
        "< Set-Cookie: b=2",
    ]


def test_terminal_body_text_binary_and_request_body_before_response_line() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, head=True, body=True)
    sink.request(req(method="POST", headers=[("Content-Type", "application/json")]))
    sink.response(*resp(headers=[("Content-Type", "text/plain; charset=utf-8")],
                       body="héllo\r\nworld\r\n".encode(), request_body=b'{"a": 1}'))
    sink.request(req(2, url="https://example.com/logo.png"))
    sink.response(*resp(2, headers=[("Content-Type", "image/png")], body=b"\x89PNG" + bytes(96)))
    assert lines(out) == [
        "---> POST https://example.com/",
        "> Content-Type: application/json",
        '{"a": 1}',
        "<--- 200 https://example.com/ (15 bytes)",
        "< Content-Type: text/plain; charset=utf-8",
        "héllo",
        "world",
        "---> GET https://example.com/logo.png",
        "> Host: example.com",
        "<--- 200 https://example.com/logo.png (100 bytes)",
        "< Content-Type: image/png",
        "<100 bytes of binary data>",
    ]


def test_terminal_body_decoding_rules() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, body=True)
    cases = [
        ([("Content-Type", "text/plain; charset=latin-1")], "café".encode("latin-1")),
        ([("Content-Type", "text/plain")], b"bad \xff byte"),          # replaced, not dropped
        ([], b"no content type but text"),                              # sniffed as text
        ([], b"\x00\x01\x02"),                                          # sniffed as binary
        ([("Content-Type", "application/problem+json")], b'{"x":1}'),
        ([("Content-Type", "text/plain")], b"\x1b[2Jevil\x07"),         # control chars escaped
        ([("Content-Type", "text/plain")], b""),                       # empty: nothing
    ]
    for i, (headers, body) in enumerate(cases):
        sink.request(req(i))
        sink.response(*resp(i, headers=headers, body=body))
    body_lines = [line for line in lines(out) if not line.startswith(("--->", "<---"))]
    assert body_lines == [
        "café",
        "bad \ufffd byte",
        "no content type but text",
        "<3 bytes of binary data>",
        '{"x":1}',
        "\\x1b[2Jevil\\x07",
    ]


def test_terminal_body_not_captured_prints_nothing() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, body=True)
    sink.request(req())
    sink.response(*resp(body=None))
    assert lines(out) == ["---> GET https://example.com/",
                          "<--- 200 https://example.com/ (1256 bytes)"]


def test_terminal_colours() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, color=True)
    for i, status in enumerate((200, 204, 302, 404, 503)):
        sink.request(req(i))
        sink.response(*resp(i, status=status))
    sink.request(req(9))
    sink.response(*resp(9, status=0, reason="", headers=[], error="connection refused"))
    assert lines(out) == [
        f"{BLUE}---> GET https://example.com/{RESET}",
        f"{GREEN}<--- 200 https://example.com/ (1256 bytes){RESET}",
        f"{BLUE}---> GET https://example.com/{RESET}",
        f"{GREEN}<--- 204 https://example.com/ (1256 bytes){RESET}",
        f"{BLUE}---> GET https://example.com/{RESET}",
        f"{MAGENTA}<--- 302 https://example.com/ (1256 bytes){RESET}",
        f"{BLUE}---> GET https://example.com/{RESET}",
        f"{YELLOW}<--- 404 https://example.com/ (1256 bytes){RESET}",
        f"{BLUE}---> GET https://example.com/{RESET}",
        f"{RED}<--- 503 https://example.com/ (1256 bytes){RESET}",
        f"{BLUE}---> GET https://example.com/{RESET}",
        f"{RED}<--- error https://example.com/: connection refused{RESET}",
    ]


def test_terminal_errors_without_colour() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, head=True)
    sink.request(req())
    sink.response(*resp(status=0, reason="", headers=[], error="upstream reset"))
    sink.request(req(2))
    sink.response(*resp(2, body_size=10, decoded_size=10, error="server closed early",
                       headers=[("A", "b")]))
    assert lines(out)[2:] == [
        "<--- error https://example.com/: upstream reset",
        "---> GET https://example.com/",
        "> Host: example.com",
        "<--- 200 https://example.com/ (10 bytes, error: server closed early)",
        "< A: b",
    ]


def test_terminal_default_colour_follows_tty_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert TerminalSink(FlushCounter(tty=True)).color is True
    assert TerminalSink(FlushCounter(tty=False)).color is False
    monkeypatch.setenv("NO_COLOR", "1")
    tty = FlushCounter(tty=True)
    sink = TerminalSink(tty)
    sink.request(req())
    assert tty.getvalue() == "---> GET https://example.com/\n"
    assert TerminalSink(FlushCounter(tty=True), color=True).color is True  # explicit wins
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: an empty value does not count
    assert TerminalSink(FlushCounter(tty=True)).color is True


def test_terminal_dns() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, print_dns=True)
    sink.dns(DnsExchange(time=T0, name="example.com.", qtype="A",
                         answers=["93.184.215.14", "93.184.215.15"], rcode="NOERROR"))
    sink.dns(DnsExchange(time=T0, name="nope.test.", qtype="AAAA", answers=[], rcode="NXDOMAIN"))
    assert lines(out) == [
        "---> DNS example.com. (A)",
        "<--- 93.184.215.14, 93.184.215.15",
        "---> DNS nope.test. (AAAA)",
        "<--- NXDOMAIN",
    ]
    quiet = io.StringIO()
    TerminalSink(quiet).dns(DnsExchange(time=T0, name="a.", qtype="A", answers=["1.2.3.4"],
                                        rcode="NOERROR"))
    assert quiet.getvalue() == ""


def test_terminal_flushes_every_group_and_survives_a_closed_pipe() -> None:
    out = FlushCounter()
    sink = TerminalSink(out, head=True)
    sink.request(req())
    sink.response(*resp())
    sink.tcp(TcpSummary(time=T0, client="a:1", server="b:2", bytes_sent=1,
                        bytes_received=2, duration=1.0))
    assert out.flushes == 2
    assert "tcp" not in out.getvalue()

    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    broken = TerminalSink(Broken())
    broken.request(req())
    broken.response(*resp())
    broken.close()
    broken.close()


def test_terminal_header_values_cannot_forge_lines() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, head=True)
    sink.request(req(headers=[("X-Evil", "a\n<--- 200 fake\x1b[31m")]))
    assert lines(out) == ["---> GET https://example.com/",
                          "> X-Evil: a\\x0a<--- 200 fake\\x1b[31m"]


# --- ndjson --------------------------------------------------------------------------------

HTTP_KEYS = ["type", "time", "exchange", "request", "response", "timings", "client",
             "server", "tls", "error"]


def test_ndjson_http_schema() -> None:
    out = FlushCounter()
    sink = NdjsonSink(out)
    sink.request(req(method="POST", url="https://example.com/api?x=1",
                     headers=[("Host", "example.com"), ("Content-Type", "application/json")],
                     tls_sni="example.com", tls_alpn="h2"))
    assert out.getvalue() == ""  # written when the response completes
    sink.response(*resp(headers=[("Content-Type", "application/json"),
                                ("Content-Encoding", "gzip")],
                       body=None, body_size=40, decoded_size=100, request_body=b"{}",
                       request_done=T0 + 0.1, response_started=T0 + 0.3))
    assert out.flushes == 1
    (line,) = lines(out)
    obj = json.loads(line)
    assert list(obj) == HTTP_KEYS
    assert obj == {
        "type": "http",
        "time": "2023-11-14T22:13:20.500Z",
        "exchange": 1,
        "request": {"method": "POST", "url": "https://example.com/api?x=1",
                    "version": "HTTP/1.1",
                    "headers": [["Host", "example.com"], ["Content-Type", "application/json"]],
                    "body_size": 2},
        "response": {"status": 200, "reason": "OK", "version": "HTTP/1.1",
                     "headers": [["Content-Type", "application/json"],
                                 ["Content-Encoding", "gzip"]],
                     "body_size": 40, "decoded_size": 100},
        "timings": {"total_ms": 500.0, "send_ms": 100.0, "wait_ms": 200.0, "receive_ms": 200.0},
        "client": "10.1.1.100:40000",
        "server": "93.184.215.14:443",
        "tls": {"sni": "example.com", "alpn": "h2"},
        "error": None,
    }
    assert "body" not in line.lower().replace("body_size", "")


def test_ndjson_plain_http_errors_and_unfinished() -> None:
    out = io.StringIO()
    sink = NdjsonSink(out)
    sink.request(req(1, url="http://a.test/"))
    sink.response(*resp(1, status=0, reason="", headers=[], error="connection refused"))
    sink.request(req(2, url="http://a.test/slow"))
    sink.close()
    sink.close()
    first, second = (json.loads(line) for line in lines(out))
    assert first["tls"] is None
    assert first["response"] is None and first["error"] == "connection refused"
    assert first["timings"]["total_ms"] == 500.0
    assert second["request"]["url"] == "http://a.test/slow"
    assert second["response"] is None and second["timings"] is None
    assert second["request"]["body_size"] is None
    assert second["error"] == common.UNFINISHED
    assert list(second) == HTTP_KEYS


def test_ndjson_tcp_dns_stats_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    sink = NdjsonSink(str(path))
    sink.tcp(TcpSummary(time=T0, client="10.1.1.100:5555", server="[2001:db8::1]:22",
                        bytes_sent=10, bytes_received=2000, duration=1.25))
    assert len(path.read_text().splitlines()) == 1  # flushed line by line
    sink.dns(DnsExchange(time=T0, name="example.com.", qtype="A", answers=["93.184.215.14"],
                         rcode="NOERROR"))
    sink.stats({"elapsed": 1.5, "stages": [{"name": "tun", "msgs_in": 3}], "type": "x"})
    sink.close()
    tcp, dns, stats = (json.loads(line) for line in path.read_text().splitlines())
    assert tcp == {"type": "tcp", "time": "2023-11-14T22:13:20.500Z", "transport": "tcp",
                   "client": "10.1.1.100:5555", "server": "[2001:db8::1]:22",
                   "bytes_sent": 10, "bytes_received": 2000, "duration_ms": 1250.0}
    assert dns == {"type": "dns", "time": "2023-11-14T22:13:20.500Z", "name": "example.com.",
                   "qtype": "A", "rcode": "NOERROR", "answers": ["93.184.215.14"]}
    assert stats == {"type": "stats", "elapsed": 1.5,
                     "stages": [{"name": "tun", "msgs_in": 3}]}


def test_ndjson_odd_strings() -> None:
    out = io.StringIO()
    sink = NdjsonSink(out)
    sink.request(req(headers=[("X-Latin", "caf\xe9"), ("X-Surrogate", "\udcff")]))
    sink.response(*resp())
    obj = json.loads(out.getvalue())
    assert obj["request"]["headers"][0] == ["X-Latin", "café"]


# --- HAR -----------------------------------------------------------------------------------

def har_entries(path: Path) -> list[Any]:
    parser = HarParser.from_file(str(path))
    assert parser.version == "1.2"
    assert parser.creator["name"] == "httptap"
    assert parser.creator["version"]
    entries: list[Any] = HarPage("unknown", har_parser=parser).entries
    return entries


def test_har_entries(tmp_path: Path) -> None:
    path = tmp_path / "out.har"
    sink = HarSink(path)
    sink.request(req(1, method="POST", url="https://example.com/form?a=1&b=x%20y&c",
                     headers=[("Host", "example.com"), ("Cookie", "sid=abc; theme=dark"),
                              ("Content-Type", "application/x-www-form-urlencoded")]))
    sink.request(req(2, url="https://example.com/logo.png", time=T0 + 1,
                     headers=[("Host", "example.com")]))
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    sink.response(*resp(2, time=T0 + 1.25, headers=[("Content-Type", "image/png")], body=png,
                       response_started=T0 + 1.1))
    sink.response(*resp(1, status=302, reason="Found", time=T0 + 0.4,
                       headers=[("Content-Type", "text/html; charset=utf-8"),
                                ("Content-Encoding", "gzip"),
                                ("Location", "https://example.com/done"),
                                ("Set-Cookie", "sid=new; Path=/; Domain=example.com; "
                                               "Secure; HttpOnly; SameSite=Lax"),
                                ("Set-Cookie", "old=; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
                                ("Set-Cookie", "ttl=1; Max-Age=60")],
                       body="<p>moved</p>".encode(), body_size=5, decoded_size=12,
                       request_body=b"a=1&b=2", request_done=T0 + 0.1,
                       response_started=T0 + 0.3))
    sink.close()
    first, second = har_entries(path)

    assert first.url == "https://example.com/form?a=1&b=x%20y&c"
    assert first.raw_entry["startedDateTime"] == "2023-11-14T22:13:20.500Z"
    assert first.startTime is not None
    assert first.request.method == "POST"
    assert first.request.httpVersion == "HTTP/1.1"
    assert first.request.queryString == [{"name": "a", "value": "1"},
                                         {"name": "b", "value": "x y"},
                                         {"name": "c", "value": ""}]
    assert first.request.cookies == [{"name": "sid", "value": "abc"},
                                     {"name": "theme", "value": "dark"}]
    assert first.request.get_header_value("cookie") == "sid=abc; theme=dark"
    assert first.request.bodySize == 7
    assert first.request.raw_entry["postData"] == {
        "mimeType": "application/x-www-form-urlencoded", "text": "a=1&b=2"}
    assert first.status == 302
    assert first.response.statusText == "Found"
    assert first.response.redirectURL == "https://example.com/done"
    assert first.response.mimeType == "text/html; charset=utf-8"
    assert first.response.text == "<p>moved</p>"
    content = first.response.raw_entry["content"]
    assert content["size"] == 12 and content["compression"] == 7 and "encoding" not in content
    assert first.response.bodySize == 5
    assert first.response.raw_entry["cookies"] == [
        {"name": "sid", "value": "new", "path": "/", "domain": "example.com", "secure": True,
         "httpOnly": True, "sameSite": "Lax"},
        {"name": "old", "value": "", "expires": "1970-01-01T00:00:00.000Z"},
        {"name": "ttl", "value": "1", "expires": "2023-11-14T22:14:20.900Z"},
    ]
    assert first.timings == {"blocked": -1, "dns": -1, "connect": -1, "send": 100.0,
                             "wait": 200.0, "receive": 100.0, "ssl": -1}
    assert first.time == 400.0
    assert first.serverAddress == "93.184.215.14"
    assert first.port == 40000
    assert first.cache == {}

    assert second.url == "https://example.com/logo.png"
    assert second.response.raw_entry["content"]["encoding"] == "base64"
    assert base64.b64decode(second.response.text) == png
    assert second.response.raw_entry["content"]["size"] == len(png)
    assert second.time == pytest.approx(250.0)
    for e in (first, second):
        assert all(e.timings[k] >= 0 for k in ("send", "wait", "receive"))
        assert e.time == pytest.approx(sum(e.timings[k] for k in ("send", "wait", "receive")))
        for part in (e.request, e.response):
            for key in ("cookies", "headers", "headersSize", "bodySize", "httpVersion"):
                assert key in part.raw_entry


def test_har_binary_post_and_undecodable_text(tmp_path: Path) -> None:
    path = tmp_path / "out.har"
    sink = HarSink(path)
    sink.request(req(headers=[("Content-Type", "application/octet-stream")], method="PUT"))
    sink.response(*resp(headers=[("Content-Type", "text/plain; charset=utf-8")],
                       body=b"bad \xff", request_body=b"\x00\x01\xff"))
    sink.close()
    (e,) = har_entries(path)
    assert e.request.raw_entry["postData"] == {
        "mimeType": "application/octet-stream", "text": "AAH/", "encoding": "base64"}
    assert e.response.raw_entry["content"]["encoding"] == "base64"
    assert base64.b64decode(e.response.text) == b"bad \xff"


def test_har_exchanges_without_response(tmp_path: Path) -> None:
    path = tmp_path / "out.har"
    sink = HarSink(path)
    sink.request(req(1, url="https://a.test/refused"))
    sink.response(*resp(1, status=0, reason="", headers=[], error="connection refused"))
    sink.request(req(2, url="https://a.test/pending", time=T0 + 2))
    sink.close()
    refused, pending = har_entries(path)
    assert refused.status == 0 and refused.raw_entry["_error"] == "connection refused"
    assert pending.status == 0 and pending.raw_entry["_error"] == common.UNFINISHED
    assert pending.time == 0 and pending.request.bodySize == -1
    for e in (refused, pending):
        assert e.response.raw_entry["content"] == {"size": 0, "mimeType": ""}
        assert all(e.timings[k] >= 0 for k in ("send", "wait", "receive"))


def test_har_empty_and_close_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "out.har"
    sink = HarSink(path)
    sink.dns(DnsExchange(time=T0, name="a.", qtype="A", answers=[], rcode="NOERROR"))
    sink.tcp(TcpSummary(time=T0, client="a:1", server="b:2", bytes_sent=0,
                        bytes_received=0, duration=0.0))
    sink.close()
    assert json.loads(path.read_text())["log"]["entries"] == []
    path.write_text("sentinel")
    sink.request(req())
    sink.close()
    assert path.read_text() == "sentinel"


def test_har_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.har"
    path.write_text("old contents, not json")
    old_inode = path.stat().st_ino
    sink = HarSink(path)
    sink.request(req())
    sink.response(*resp(body=b"<html></html>"))
    sink.close()
    assert path.stat().st_ino != old_inode  # renamed over, not rewritten in place
    assert len(har_entries(path)) == 1
    assert sorted(os.listdir(tmp_path)) == ["out.har"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o600  # it holds bodies and cookies


def test_har_failed_write_leaves_the_old_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.har"
    path.write_text("previous run")
    sink = HarSink(path)
    sink.request(req())

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        sink.close()
    assert path.read_text() == "previous run"
    assert sorted(os.listdir(tmp_path)) == ["out.har"]


def test_har_file_is_the_formatted_log_of_its_entries(tmp_path: Path) -> None:
    """Written entry by entry from the spool, the file is byte for byte what formatting
    the whole log at once gives: entries in request order, unfinished ones included."""
    import msgspec

    from httptap.sinks.har import entry, har_log

    path = tmp_path / "out.har"
    sink = HarSink(path)
    requests = [req(1, time=T0 + 2), req(2, time=T0), req(3, time=T0 + 1, url="https://x/\u00e9")]
    for r in requests:
        sink.request(r)
    responses = [resp(2, body=b"<p>two</p>", time=T0 + 3), resp(1, time=T0 + 4)]
    for r in responses:
        sink.response(*r)
    sink.close()
    expected = [entry(requests[1], *responses[0]), entry(requests[2], None),
                entry(requests[0], *responses[1])]
    assert path.read_bytes() == msgspec.json.format(
        msgspec.json.encode(har_log(expected)), indent=2) + b"\n"


def test_har_spool_is_removed_at_close_and_survives_a_dead_sink(tmp_path: Path) -> None:
    from httptap.sinks.har import assemble_spool, spool_path

    spool = spool_path(str(tmp_path), 0)
    sink = HarSink(tmp_path / "a.har", spool=spool)
    sink.request(req(1))
    assert os.stat(spool).st_mode & 0o777 == 0o600
    sink.close()
    assert not os.path.exists(spool)
    assert assemble_spool(spool, str(tmp_path / "b.har")) is None  # nothing left behind

    # A sink that dies: what it spooled (one complete exchange, one in flight, and a
    # line cut short by the kill) is still a valid HAR file.
    sink = HarSink(tmp_path / "never.har", spool=spool)
    sink.request(req(1))
    sink.response(*resp(1, body=b"done"))
    sink.request(req(2, time=T0 + 1))
    with open(spool, "ab") as f:
        f.write(b"E 2 1700000001.5 {\"startedDate")
    assert assemble_spool(spool, str(tmp_path / "b.har")) == 2
    assert not os.path.exists(spool)
    first, second = har_entries(tmp_path / "b.har")
    assert (first["response"]["status"], first["response"]["content"]["text"]) == (200, "done")
    assert second["response"]["status"] == 0
    assert second["_error"] == common.UNFINISHED


def test_har_sink_keeps_no_entries_in_memory(tmp_path: Path) -> None:
    sink = HarSink(tmp_path / "out.har")
    for i in range(1, 200):
        sink.request(req(i))
        sink.response(*resp(i, body=b"x" * 1000))
    assert not sink._requests and not [v for v in vars(sink).values() if isinstance(v, list)]
    sink.close()
    assert len(json.loads((tmp_path / "out.har").read_text())["log"]["entries"]) == 199


def test_har_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        HarSink(tmp_path / "missing" / "out.har")


# --- make_sinks and helpers ----------------------------------------------------------------

def test_make_sinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr("sys.stderr", stderr)
    config = Config(command=("true",), head=True, body=True, print_dns=True, use_stderr=True)
    nd_path, har_path = tmp_path / "x.ndjson", tmp_path / "x.har"
    sinks = make_sinks(("terminal", "ndjson", f"ndjson:{nd_path}", f"har:{har_path}"), config)
    terminal, nd_out, nd_file, har_sink = sinks
    assert isinstance(terminal, TerminalSink) and terminal.stream is stderr
    assert terminal.head and terminal.body and terminal.print_dns and not terminal.color
    assert isinstance(nd_out, NdjsonSink) and isinstance(nd_file, NdjsonSink)
    assert nd_out.bodies and nd_file.bodies  # --body: ndjson writes them too
    assert isinstance(har_sink, HarSink)
    for sink in sinks:
        sink.request(req())
        sink.response(*resp())
        sink.close()
    assert stderr.getvalue().startswith("---> GET https://example.com/\n")
    assert json.loads(stdout.getvalue())["type"] == "http"
    assert json.loads(nd_path.read_text())["type"] == "http"
    assert len(har_entries(har_path)) == 1


@pytest.mark.parametrize("spec", ["html", "har", "har:", "terminal:x", "ndjson:"])
def test_make_sinks_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        make_sinks((spec,), Config(command=("true",)))


def test_make_sinks_closes_what_it_built_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    with pytest.raises(ValueError):
        make_sinks((f"ndjson:{path}", "bogus"), Config(command=("true",)))
    assert path.read_text() == ""


def test_timings_are_clamped() -> None:
    r = req(time=T0)
    assert common.timings(r, resp(time=T0 + 1)[0]) == (0.0, 0.0, 1000.0, 1000.0)
    # stamps out of order or outside the exchange never give negative phases
    t = common.timings(r, resp(time=T0 + 1, request_done=T0 + 2, response_started=T0 - 1)[0])
    assert t == (1000.0, 0.0, 0.0, 1000.0)
    assert common.timings(r, resp(time=T0 - 5)[0]) == (0.0, 0.0, 0.0, 0.0)
    t = common.timings(r, resp(time=T0 + 1, request_headers_done=T0 + 0.25)[0])
    assert t == (250.0, 0.0, 750.0, 1000.0)


def test_addresses() -> None:
    assert common.host_of("1.2.3.4:443") == "1.2.3.4"
    assert common.port_of("1.2.3.4:443") == "443"
    assert common.host_of("[fd00::1]:8080") == "fd00::1"
    assert common.port_of("[fd00::1]:8080") == "8080"
    assert common.host_of("fd00::1") == "fd00::1"  # unbracketed: no port
    assert common.port_of("fd00::1") == ""
    assert common.port_of("") == ""



# --------------------------------------------------------------------------- bodies

def test_body_assembler_joins_chunks_per_exchange_up_to_the_limit() -> None:
    from httptap.plumbing.messages import BodyChunk
    from httptap.sinks.bodies import NO_BODIES, BodyAssembler

    bodies = BodyAssembler(max_size=10)
    for exchange, request, data in [(1, True, b"up"), (2, False, b"0123456"), (1, False, b"dn"),
                                    (2, False, b"789abc"), (1, True, b"load"), (2, False, b"x")]:
        bodies.add(BodyChunk(exchange, request, data))
    assert bodies.held == 8 + 10  # never more than max_size per body
    first, second = resp(1)[0], resp(2)[0]
    assert bodies.take(first) == Bodies(b"upload", b"dn")
    assert bodies.take(second) == Bodies(b"", b"0123456789", False, True)
    assert bodies.held == 0 and bodies.take(first) is NO_BODIES
    # The proxy's own cut (its --max-body-size) comes on the response.
    cut = resp(3, truncated=True, request_truncated=True)[0]
    assert bodies.take(cut) == Bodies(b"", b"", True, True)


def test_truncated_bodies_are_marked_in_every_sink(tmp_path: Path) -> None:
    big = resp(headers=[("Content-Type", "text/plain")], body=b"first part", decoded_size=5000,
               truncated=True, request_body=b"\x00\x01", request_body_size=900,
               request_truncated=True)
    out = io.StringIO()
    terminal = TerminalSink(out, body=True)
    terminal.request(req(method="PUT", headers=[("Content-Type", "application/octet-stream")]))
    terminal.response(*big)
    assert lines(out) == [
        "---> PUT https://example.com/",
        "<2 bytes of binary data>",
        "<truncated: 2 of 900 bytes shown>",
        "<--- 200 https://example.com/ (5000 bytes)",
        "first part",
        "<truncated: 10 of 5000 bytes shown>",
    ]
    nd = io.StringIO()
    ndjson = NdjsonSink(nd, bodies=True)
    ndjson.request(req(method="PUT", headers=[("Content-Type", "application/octet-stream")]))
    ndjson.response(*big)
    ndjson.request(req(2))
    ndjson.response(*resp(2, body=b"<p>all</p>"))
    first, second = (json.loads(line) for line in lines(nd))
    assert list(first["request"])[-4:] == ["body_size", "body", "body_encoding", "truncated"]
    assert (first["request"]["body"], first["request"]["body_encoding"],
            first["request"]["truncated"]) == ("AAE=", "base64", True)
    assert list(first["response"])[-3:] == ["body", "body_encoding", "truncated"]
    assert (first["response"]["body"], first["response"]["body_encoding"],
            first["response"]["truncated"]) == ("first part", "text", True)
    assert (second["response"]["body"], second["response"]["truncated"]) == ("<p>all</p>", False)
    path = tmp_path / "x.har"
    har = HarSink(path)
    har.request(req(method="PUT", headers=[("Content-Type", "application/octet-stream")]))
    har.response(*big)
    har.close()
    (entry,) = har_entries(path)
    assert entry.request.raw_entry["postData"]["comment"] == \
        "truncated: the first 2 of 900 bytes are kept (--max-body-size)"
    assert entry.response.raw_entry["content"]["comment"] == \
        "truncated: the first 10 of 5000 bytes are kept (--max-body-size)"
    assert entry.response.text == "first part"


@pytest.mark.parametrize("text, size", [
    ("16M", 16 << 20), ("0", 0), ("100", 100), ("100K", 102400), ("2g", 2 << 30),
    ("1MiB", 1 << 20), ("64KB", 65536), (" 5M ", 5 << 20),
])
def test_parse_size(text: str, size: int) -> None:
    from httptap.run.cli import parse_size

    assert parse_size(text, "--max-body-size") == size


@pytest.mark.parametrize("text", ["", "M", "-1", "1.5M", "16T", "lots", "1 6M", "٣M"])
def test_parse_size_rejects(text: str) -> None:
    import typer

    from httptap.run.cli import parse_size

    with pytest.raises(typer.BadParameter):
        parse_size(text, "--max-body-size")


# --- gRPC: the call's status, from the trailers ----------------------------------------------

GRPC_HEADERS = [("content-type", "application/grpc")]


def test_terminal_names_the_grpc_status_of_a_call() -> None:
    out = io.StringIO()
    sink = TerminalSink(out)
    url = "https://host/pkg.Svc/Get"
    sink.request(req(1, method="POST", url=url))
    sink.response(*resp(1, headers=GRPC_HEADERS, body=b"", trailers=[("grpc-status", "5"),
                                                                      ("grpc-message", "no")]))
    sink.request(req(2, method="POST", url=url))
    sink.response(*resp(2, headers=GRPC_HEADERS, body=bytes(12), trailers=[("grpc-status", "0")]))
    sink.request(req(3, method="POST", url=url))  # trailers-only: the status in the headers
    sink.response(*resp(3, headers=[*GRPC_HEADERS, ("grpc-status", "12")], body=b""))
    assert [line for line in lines(out) if line.startswith("<---")] == [
        f"<--- 200 {url} (0 bytes) grpc-status 5 NOT_FOUND",
        f"<--- 200 {url} (12 bytes) grpc-status 0 OK",
        f"<--- 200 {url} (0 bytes) grpc-status 12 UNIMPLEMENTED",
    ]


def test_ndjson_and_har_keep_the_trailers(tmp_path: Path) -> None:
    trailers = [("grpc-status", "5"), ("grpc-message", "not here")]
    out = FlushCounter()
    sink = NdjsonSink(out)
    sink.request(req(1, method="POST"))
    sink.response(*resp(1, headers=GRPC_HEADERS, body=b"", trailers=trailers))
    (line,) = lines(out)
    assert json.loads(line)["response"]["trailers"] == [list(t) for t in trailers]
    path = tmp_path / "out.har"
    har = HarSink(path)
    har.request(req(1, method="POST"))
    har.response(*resp(1, headers=GRPC_HEADERS, body=b"", trailers=trailers))
    har.close()
    (entry,) = har_entries(path)
    assert entry["response"]["_trailers"] == [{"name": n, "value": v} for n, v in trailers]


# --- WebSocket messages ------------------------------------------------------------------------

WS_URL = "wss://example.com/chat"


def ws(from_client: bool, opcode: int, data: bytes | None, *, size: int | None = None,
       exchange: int = 1, time: float = T0 + 1, **kw: Any) -> WsMessage:
    return WsMessage(exchange=exchange, time=time, url=WS_URL, from_client=from_client,
                     opcode=opcode, size=len(data or b"") if size is None else size, data=data,
                     **kw)


WS_EXCHANGE = [
    ws(True, 1, b"hello"),
    ws(False, 2, bytes(range(200)), time=T0 + 2),
    ws(False, 1, b"x" * 65536, size=100_000, truncated=True, compressed=True, time=T0 + 3),
    ws(True, 8, b"\x03\xe8bye", close_code=1000, close_reason="bye", time=T0 + 4),
    ws(False, 8, b"", close_code=0, time=T0 + 5),
]
WS_END = WsEnd(exchange=1, time=T0 + 6, url=WS_URL, messages_sent=1, messages_received=2,
               pings_sent=3, pongs_received=3)


def test_terminal_websocket_lines() -> None:
    out = io.StringIO()
    sink = TerminalSink(out)
    for msg in WS_EXCHANGE:
        sink.ws(msg)
    sink.ws_end(WS_END)
    assert lines(out) == [
        f"---> WS text {WS_URL} (5 bytes)",
        f"<--- WS binary {WS_URL} (200 bytes)",
        f"<--- WS text {WS_URL} (100000 bytes)",  # (data kept for a HAR, not shown here)
        f'---> WS close {WS_URL} (code 1000, "bye")',
        f"<--- WS close {WS_URL} (no code)",
    ]
    out = io.StringIO()
    TerminalSink(out, body=True).ws(WS_EXCHANGE[2])
    assert lines(out)[0] == f"<--- WS text {WS_URL} (100000 bytes, 65536 shown)"


def test_terminal_websocket_body_text_as_text_binary_as_a_short_hex_dump() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, body=True, color=True)
    sink.ws(ws(True, 1, b"two\r\nlines \x1b[31m"))
    sink.ws(ws(False, 2, b"\x00hi\xff" * 20))
    sink.ws(ws(False, 2, b"\x01\x02"))
    sink.ws(ws(False, 2, None, size=7))  # bodies not kept: the line alone
    assert lines(out) == [
        f"{BLUE}---> WS text {WS_URL} (16 bytes){RESET}",
        "two",
        "lines \\x1b[31m",
        f"{GREEN}<--- WS binary {WS_URL} (80 bytes){RESET}",
        "0000  00 68 69 ff 00 68 69 ff 00 68 69 ff 00 68 69 ff  |.hi..hi..hi..hi.|",
        "0010  00 68 69 ff 00 68 69 ff 00 68 69 ff 00 68 69 ff  |.hi..hi..hi..hi.|",
        "0020  00 68 69 ff 00 68 69 ff 00 68 69 ff 00 68 69 ff  |.hi..hi..hi..hi.|",
        "0030  00 68 69 ff 00 68 69 ff 00 68 69 ff 00 68 69 ff  |.hi..hi..hi..hi.|",
        "... 16 more bytes",
        f"{GREEN}<--- WS binary {WS_URL} (2 bytes){RESET}",
        "0000  01 02                                            |..|",
        f"{GREEN}<--- WS binary {WS_URL} (7 bytes){RESET}",
    ]


def test_ndjson_ws_records() -> None:
    out = io.StringIO()
    sink = NdjsonSink(out)
    for msg in WS_EXCHANGE[:4]:
        sink.ws(msg)
    sink.ws(ws(False, 2, None, size=9))
    sink.ws_end(WS_END)
    sink.ws_end(WsEnd(2, T0, "ws://h/", 0, 0, error="a server frame with a mask"))
    records = [json.loads(line) for line in lines(out)]
    common_keys = {"type": "ws", "exchange": 1, "url": WS_URL}
    assert records == [
        {**common_keys, "time": "2023-11-14T22:13:21.500Z", "direction": "send",
         "opcode": "text", "size": 5, "compressed": False, "truncated": False, "data": "hello"},
        {**common_keys, "time": "2023-11-14T22:13:22.500Z", "direction": "receive",
         "opcode": "binary", "size": 200, "compressed": False, "truncated": False,
         "data": base64.b64encode(bytes(range(200))).decode(), "data_encoding": "base64"},
        {**common_keys, "time": "2023-11-14T22:13:23.500Z", "direction": "receive",
         "opcode": "text", "size": 100_000, "compressed": True, "truncated": True,
         "data": "x" * 65536},
        {**common_keys, "time": "2023-11-14T22:13:24.500Z", "direction": "send",
         "opcode": "close", "size": 5, "compressed": False, "truncated": False,
         "data": base64.b64encode(b"\x03\xe8bye").decode(), "data_encoding": "base64",
         "close_code": 1000, "close_reason": "bye"},
        {**common_keys, "time": "2023-11-14T22:13:21.500Z", "direction": "receive",
         "opcode": "binary", "size": 9, "compressed": False, "truncated": False, "data": None},
        {"type": "ws_end", "time": "2023-11-14T22:13:26.500Z", "exchange": 1, "url": WS_URL,
         "messages_sent": 1, "messages_received": 2, "pings_sent": 3, "pongs_sent": 0,
         "pings_received": 0, "pongs_received": 3, "error": None},
        {"type": "ws_end", "time": "2023-11-14T22:13:20.500Z", "exchange": 2, "url": "ws://h/",
         "messages_sent": 0, "messages_received": 0, "pings_sent": 0, "pongs_sent": 0,
         "pings_received": 0, "pongs_received": 0, "error": "a server frame with a mask"},
    ]
    assert list(records[3]) == ["type", "time", "exchange", "url", "direction", "opcode", "size",
                                "compressed", "truncated", "data", "data_encoding",
                                "close_code", "close_reason"]


def test_har_websocket_messages_on_the_101_entry(tmp_path: Path) -> None:
    path = tmp_path / "ws.har"
    sink = HarSink(path)
    sink.request(req(1, url="https://example.com/chat",
                     headers=[("Host", "example.com"), ("Upgrade", "websocket")]))
    sink.response(*resp(1, status=101, reason="Switching Protocols", body=b"",
                       headers=[("Upgrade", "websocket")]))
    sink.request(req(2, url="https://example.com/other", time=T0 + 2))
    sink.response(*resp(2, time=T0 + 2.5))
    for msg in WS_EXCHANGE:
        sink.ws(msg)
    sink.ws(ws(True, 1, b"no such exchange", exchange=99))
    sink.ws_end(WS_END)
    sink.close()
    switched, other = har_entries(path)
    assert switched["_resourceType"] == "websocket"
    assert switched["_webSocketMessages"] == [
        {"type": "send", "time": T0 + 1, "opcode": 1, "data": "hello"},
        {"type": "receive", "time": T0 + 2, "opcode": 2,
         "data": base64.b64encode(bytes(range(200))).decode()},
        {"type": "receive", "time": T0 + 3, "opcode": 1, "data": "x" * 65536, "_truncated": True},
        {"type": "send", "time": T0 + 4, "opcode": 8,
         "data": base64.b64encode(b"\x03\xe8bye").decode()},
        {"type": "receive", "time": T0 + 5, "opcode": 8, "data": ""},
    ]
    assert "_webSocketMessages" not in other


# --- --body: streamed responses print as they arrive -----------------------------------------

def test_terminal_prints_a_streamed_text_body_line_by_line_as_it_arrives() -> None:
    from httptap.plumbing.messages import BodyChunk, HttpResponseHead

    out = io.StringIO()
    sink = TerminalSink(out, body=True)
    url = "https://example.com/events"
    sink.request(req(1, url=url))
    sse = [("Content-Type", "text/event-stream; charset=utf-8")]
    sink.response_head(HttpResponseHead(1, T0, 200, "OK", "HTTP/1.1", sse))
    assert lines(out)[-1] == f"<--- 200 {url} (streaming)"
    sink.body_chunk(BodyChunk(1, False, b"data: one\n\nda"))
    assert lines(out)[-3:] == [f"<--- 200 {url} (streaming)", "data: one", ""]
    sink.body_chunk(BodyChunk(1, False, "ta: tw\u00e9\n\n".encode()[:-3]))  # é cut in two
    sink.body_chunk(BodyChunk(1, False, "ta: tw\u00e9\n\n".encode()[-3:] + b"tail"))
    sink.response(*resp(1, headers=sse, body=b"data: one\n\ndata: tw\xc3\xa9\n\ntail"))
    assert lines(out) == [
        f"---> GET {url}", f"<--- 200 {url} (streaming)", "data: one", "", "data: tw\u00e9", "",
        "tail", f"<--- 200 {url} (27 bytes)"]


def test_terminal_without_body_or_for_binary_streams_waits_for_the_end() -> None:
    from httptap.plumbing.messages import BodyChunk, HttpResponseHead

    for body, ctype in ((False, "text/event-stream"), (True, "application/octet-stream")):
        out = io.StringIO()
        sink = TerminalSink(out, body=body)
        sink.request(req(1))
        sink.response_head(HttpResponseHead(1, T0, 200, "OK", "HTTP/1.1", [("Content-Type", ctype)]))
        sink.body_chunk(BodyChunk(1, False, b"\x00\x01"))
        assert lines(out) == ["---> GET https://example.com/"]


def test_the_reporter_sends_heads_of_streamed_bodies_only() -> None:
    from httptap.http.http1 import ResponseHead
    from httptap.http.report import streams

    def head(*headers: tuple[str, str], status: int = 200) -> ResponseHead:
        return ResponseHead(status, "OK", "HTTP/1.1", list(headers), T0)

    assert streams("GET", head(("Content-Type", "text/event-stream"), ("Content-Length", "9")))
    assert streams("GET", head(("Transfer-Encoding", "chunked")))
    assert not streams("GET", head(("Content-Length", "5")))
    assert not streams("HEAD", head(("Transfer-Encoding", "chunked")))
    assert not streams("GET", head(status=204))


def test_a_batched_terminal_writes_once_per_flush() -> None:
    """In the sink stage the terminal writes once per wake-up, not once per line."""

    class CountingStream(io.StringIO):
        writes = 0

        def write(self, s: str) -> int:
            self.writes += 1
            return super().write(s)

    out = CountingStream()
    sink = TerminalSink(out, batched=True)
    for exchange in range(1, 51):
        sink.request(req(exchange))
        sink.response(*resp(exchange))
    assert out.writes == 0
    sink.flush()
    assert out.writes == 1 and len(lines(out)) == 100
    sink.request(req(99))
    sink.close()  # what is queued is written on every way out
    assert out.writes == 2 and lines(out)[-1] == "---> GET https://example.com/"


# --- per-exchange fast paths ---------------------------------------------------------------

def test_ndjson_batched_writes_once_per_flush(tmp_path: Path) -> None:
    """As the sink stage uses it: lines wait for flush() (once per wake-up), in order."""
    out = FlushCounter()
    sink = NdjsonSink(out, batched=True)
    for i in (1, 2):
        sink.request(req(i))
        sink.response(*resp(i))
    assert out.getvalue() == "" and out.flushes == 0
    sink.flush()
    assert [json.loads(line)["exchange"] for line in lines(out)] == [1, 2]
    assert out.flushes == 1
    sink.flush()
    assert out.flushes == 1  # nothing queued: nothing written
    sink.request(req(3))
    sink.close()  # the unfinished exchange is written at close, batched or not
    assert [json.loads(line)["exchange"] for line in lines(out)] == [1, 2, 3]
    path = tmp_path / "b.ndjson"
    to_file = NdjsonSink(str(path), batched=True)
    to_file.request(req(1))
    to_file.response(*resp(1))
    assert path.read_text() == ""
    to_file.flush()
    assert len(path.read_text().splitlines()) == 1
    to_file.close()


def test_make_sinks_batches_ndjson(tmp_path: Path) -> None:
    sinks = make_sinks((f"ndjson:{tmp_path / 'x.ndjson'}",), Config(command=("true",)))
    assert isinstance(sinks[0], NdjsonSink) and sinks[0].batched
    sinks[0].close()


def test_iso_time_is_datetime_s_text_to_the_millisecond() -> None:
    """The per-second cache gives what datetime gives, at the edges of seconds too
    (a fraction that rounds up to the next second, half-microseconds)."""
    edges = [0.0, 0.9999995, 0.9999994999999, 1_700_000_000.5, 1_700_000_000.9999995,
             1_700_000_000.0000005, 1_700_000_000.9999996, 1_700_000_059.9995,
             1_700_000_059.9999999, 253_402_300_799.999, -1.25, 4_000_000_000.0005]
    values = edges + [1_700_000_000 + i * 0.0001234567 for i in range(20_000)]
    for t in values:
        assert common.iso_time(t) == common._iso_time_slow(t), t
    with pytest.raises((ValueError, OverflowError)):
        common.iso_time(1e20)  # beyond datetime: raises as before


def test_terminal_escaping_of_one_line_fields_unchanged() -> None:
    from httptap.sinks import terminal

    def reference(text: str) -> str:
        return terminal._escape(text).replace("\n", "\\x0a").replace("\t", "\\x09")

    samples = ["/plain?q=1", "caf\xe9", "a\tb", "a\nb", "\x1b[31m", "\x7f\x85\x9f", "\xa0nbsp",
               "\u2028sep", "\ud800", ""] + [chr(c) for c in range(0x200)]
    for text in samples:
        assert terminal._escape_line(text) == reference(text), repr(text)
