"""End to end: a real WebSocket client (python ``websockets``) under httptap against the test
host's echo (``servers.py`` ``/ws``), over ws:// and wss://, with and without
permessage-deflate (context takeover, no context takeover, a smaller window).

httptap's lines go to stderr (``--stderr``) and the client prints only on stdout, so the
lines are compared exactly; the ndjson ``ws`` records and the HAR's ``_webSocketMessages``
are checked message by message.
"""

from __future__ import annotations

import base64
import json
import sys

import pytest
from runner import run_httptap

pytestmark = pytest.mark.root

pytest.importorskip("websockets")

CLIENT = """
import json, sys
from websockets.sync.client import connect
url, compression = sys.argv[1], sys.argv[2]
results = {}
with connect(url, compression=None if compression == "none" else "deflate",
             open_timeout=30, close_timeout=30) as ws:
    results["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
    ws.send("hello websocket")
    results["text"] = ws.recv(timeout=30) == "hello websocket"
    ws.send(bytes(range(256)) * 4)
    results["binary"] = ws.recv(timeout=30) == bytes(range(256)) * 4
    ws.send(["frag", "mented"])                       # one message in two frames
    results["fragmented"] = ws.recv(timeout=30) == "fragmented"
    results["pong"] = ws.ping(b"are you there").wait(30)
    big = "".join("line %06d of a long message\\n" % i for i in range(4000))
    ws.send(big)
    results["big"] = ws.recv(timeout=30) == big
    ws.close(1000, "done")
print(json.dumps(results))
"""
BIG = len("line 000000 of a long message\n") * 4000  # 120000 bytes


def tap(*args: str, url: str, compression: str, ca_file: str) -> tuple[list[str], dict]:
    r = run_httptap("--stderr", *args, "--", sys.executable, "-c", CLIENT, url, compression,
                    timeout=120, env={"SSL_CERT_FILE": ca_file})
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stderr.splitlines(), json.loads(r.stdout)


def ws_lines(url: str) -> list[str]:
    """The terminal lines of one run of CLIENT (``url`` as ws:// or wss://)."""
    return [
        f"---> WS text {url} (15 bytes)", f"<--- WS text {url} (15 bytes)",
        f"---> WS binary {url} (1024 bytes)", f"<--- WS binary {url} (1024 bytes)",
        f"---> WS text {url} (10 bytes)", f"<--- WS text {url} (10 bytes)",
        f"---> WS text {url} ({BIG} bytes)", f"<--- WS text {url} ({BIG} bytes)",
        f'---> WS close {url} (code 1000, "done")', f"<--- WS close {url} (code 1000)",
    ]


def as_ws(url: str) -> str:
    return "ws" + url[len("http"):]


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_messages_without_compression_terminal_lines_and_body(test_host, scheme):
    url = (test_host.url if scheme == "ws" else test_host.https_url)("/ws")
    lines, results = tap("--body", url=as_ws(url), compression="none",
                         ca_file=str(test_host.ca_file))
    assert results == {"extensions": None, "text": True, "binary": True, "fragmented": True,
                       "pong": True, "big": True}
    wsurl = as_ws(url)
    dump = ["0000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|",
            "0010  10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f  |................|",
            "0020  20 21 22 23 24 25 26 27 28 29 2a 2b 2c 2d 2e 2f  | !\"#$%&'()*+,-./|",
            "0030  30 31 32 33 34 35 36 37 38 39 3a 3b 3c 3d 3e 3f  |0123456789:;<=>?|",
            "... 960 more bytes"]
    big_shown = f"{BIG} bytes, 65536 shown"
    big_text = "".join("line %06d of a long message\n" % i for i in range(4000))[:65536]
    expected = [f"---> GET {url}", f"<--- 101 {url} (0 bytes)"]
    for line in ws_lines(wsurl):
        if line.endswith(f"({BIG} bytes)"):
            expected.append(line.replace(f"{BIG} bytes", big_shown))
            expected += big_text.rstrip("\n").split("\n")
        else:
            expected.append(line)
            if " WS text " in line:
                expected.append("hello websocket" if "(15 bytes)" in line else "fragmented")
            elif " WS binary " in line:
                expected += dump
    assert lines == expected


@pytest.mark.parametrize("scheme,query", [("ws", ""), ("wss", "?deflate=fresh"),
                                          ("ws", "?window=10")])
def test_permessage_deflate_ndjson_and_har(test_host, tmp_path, scheme, query):
    url = (test_host.url if scheme == "ws" else test_host.https_url)("/ws" + query)
    wsurl = as_ws(url)
    nd, har = tmp_path / "out.ndjson", tmp_path / "out.har"
    lines, results = tap("--sink", "terminal", "--sink", f"ndjson:{nd}", "--dump-har", str(har),
                         url=wsurl, compression="deflate", ca_file=str(test_host.ca_file))
    assert results["extensions"].startswith("permessage-deflate")
    assert {k: v for k, v in results.items() if k != "extensions"} == {
        "text": True, "binary": True, "fragmented": True, "pong": True, "big": True}
    assert lines == [f"---> GET {url}", f"<--- 101 {url} (0 bytes)", *ws_lines(wsurl)]

    records = [json.loads(line) for line in nd.read_text().splitlines()]
    [http] = [r for r in records if r["type"] == "http"]
    assert http["response"]["status"] == 101
    ws = [r for r in records if r["type"] == "ws"]
    assert {r["exchange"] for r in ws} == {http["exchange"]}
    expected_ws = []
    for opcode, size in [("text", 15), ("binary", 1024), ("text", 10), ("text", BIG)]:
        expected_ws += [("send", opcode, size, True), ("receive", opcode, size, True)]
    expected_ws += [("send", "close", 6, False), ("receive", "close", 2, False)]
    assert [(r["direction"], r["opcode"], r["size"], r["compressed"]) for r in ws] == expected_ws
    assert [r["data"] for r in ws[:2]] == ["hello websocket"] * 2
    assert base64.b64decode(ws[2]["data"]) == bytes(range(256)) * 4
    assert [r["truncated"] for r in ws] == [False] * 6 + [True, True, False, False]
    assert (ws[8]["close_code"], ws[8]["close_reason"], ws[9]["close_code"]) == (1000, "done", 1000)
    [end] = [r for r in records if r["type"] == "ws_end"]
    assert (end["exchange"], end["messages_sent"], end["messages_received"], end["pings_sent"],
            end["pongs_received"], end["error"]) == (http["exchange"], 4, 4, 1, 1, None)

    [entry] = json.loads(har.read_text())["log"]["entries"]
    assert entry["response"]["status"] == 101
    messages = entry["_webSocketMessages"]
    assert [(m["type"], m["opcode"]) for m in messages] == [
        (r["direction"], {"text": 1, "binary": 2, "close": 8}[r["opcode"]]) for r in ws]
    assert messages[4]["data"] == "fragmented"
    assert [m["time"] for m in messages] == sorted(m["time"] for m in messages)
