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

from httptap.config import Config
from httptap.messages import DnsExchange, HttpRequest, HttpResponse, TcpSummary
from httptap.sinks import HarSink, NdjsonSink, TerminalSink, make_sinks
from httptap.sinks import common

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
         body_size: int | None = None, time: float = T0 + 0.5, **kw: Any) -> HttpResponse:
    size = len(body) if body is not None else 1256
    return HttpResponse(
        exchange=exchange, time=time, status=status, reason=reason, version="HTTP/1.1",
        headers=headers if headers is not None else [("Content-Type", "text/html")],
        request_body_size=len(request_body or b""), request_body=request_body,
        body_size=size if body_size is None else body_size,
        decoded_size=size if decoded_size is None else decoded_size, body=body, **kw)


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
    sink.response(resp())
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
    sink.response(resp(2, status=404, body_size=100, decoded_size=300))
    sink.response(resp(1, status=301))
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
    sink.response(resp(headers=[("Content-Type", "text/html"), ("Set-Cookie", "a=1"),
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
    sink.response(resp(headers=[("Content-Type", "text/plain; charset=utf-8")],
                       body="héllo\r\nworld\r\n".encode(), request_body=b'{"a": 1}'))
    sink.request(req(2, url="https://example.com/logo.png"))
    sink.response(resp(2, headers=[("Content-Type", "image/png")], body=b"\x89PNG" + bytes(96)))
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
        sink.response(resp(i, headers=headers, body=body))
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
    sink.response(resp(body=None))
    assert lines(out) == ["---> GET https://example.com/",
                          "<--- 200 https://example.com/ (1256 bytes)"]


def test_terminal_colours() -> None:
    out = io.StringIO()
    sink = TerminalSink(out, color=True)
    for i, status in enumerate((200, 204, 302, 404, 503)):
        sink.request(req(i))
        sink.response(resp(i, status=status))
    sink.request(req(9))
    sink.response(resp(9, status=0, reason="", headers=[], error="connection refused"))
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
    sink.response(resp(status=0, reason="", headers=[], error="upstream reset"))
    sink.request(req(2))
    sink.response(resp(2, body_size=10, decoded_size=10, error="server closed early",
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
    sink.response(resp())
    sink.tcp(TcpSummary(time=T0, client="a:1", server="b:2", bytes_sent=1,
                        bytes_received=2, duration=1.0))
    assert out.flushes == 2
    assert "tcp" not in out.getvalue()

    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    broken = TerminalSink(Broken())
    broken.request(req())
    broken.response(resp())
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
    sink.response(resp(headers=[("Content-Type", "application/json"),
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
    sink.response(resp(1, status=0, reason="", headers=[], error="connection refused"))
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
    sink.response(resp())
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
    sink.response(resp(2, time=T0 + 1.25, headers=[("Content-Type", "image/png")], body=png,
                       response_started=T0 + 1.1))
    sink.response(resp(1, status=302, reason="Found", time=T0 + 0.4,
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
    sink.response(resp(headers=[("Content-Type", "text/plain; charset=utf-8")],
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
    sink.response(resp(1, status=0, reason="", headers=[], error="connection refused"))
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
    sink.response(resp(body=b"<html></html>"))
    sink.close()
    assert path.stat().st_ino != old_inode  # renamed over, not rewritten in place
    assert len(har_entries(path)) == 1
    assert sorted(os.listdir(tmp_path)) == ["out.har"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


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
        sink.response(r)
    sink.close()
    expected = [entry(requests[1], responses[0]), entry(requests[2], None),
                entry(requests[0], responses[1])]
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
    sink.response(resp(1, body=b"done"))
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
        sink.response(resp(i, body=b"x" * 1000))
    assert not sink._requests and not [v for v in vars(sink).values() if isinstance(v, list)]
    sink.close()
    assert len(json.loads((tmp_path / "out.har").read_text())["log"]["entries"]) == 199


def test_har_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        HarSink(tmp_path / "missing" / "out.har")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    assert isinstance(har_sink, HarSink)
    for sink in sinks:
        sink.request(req())
        sink.response(resp())
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
    assert common.timings(r, resp(time=T0 + 1)) == (0.0, 0.0, 1000.0, 1000.0)
    # stamps out of order or outside the exchange never give negative phases
    t = common.timings(r, resp(time=T0 + 1, request_done=T0 + 2, response_started=T0 - 1))
    assert t == (1000.0, 0.0, 0.0, 1000.0)
    assert common.timings(r, resp(time=T0 - 5)) == (0.0, 0.0, 0.0, 0.0)
    t = common.timings(r, resp(time=T0 + 1, request_headers_done=T0 + 0.25))
    assert t == (250.0, 0.0, 750.0, 1000.0)


def test_addresses() -> None:
    assert common.host_of("1.2.3.4:443") == "1.2.3.4"
    assert common.port_of("1.2.3.4:443") == "443"
    assert common.host_of("[fd00::1]:8080") == "fd00::1"
    assert common.port_of("[fd00::1]:8080") == "8080"
    assert common.host_of("fd00::1") == "fd00::1"  # unbracketed: no port
    assert common.port_of("fd00::1") == ""
    assert common.port_of("") == ""

