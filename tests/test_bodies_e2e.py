"""End to end: bodies of any size with ``--dump-har``, ``--body`` and ``--sink ndjson``.

Bodies travel from the proxy to the sink as ``BodyChunk`` messages, so no size of body can
produce a message over a ring's record limit; what is kept is bounded by
``--max-body-size`` (default 16M) and a cut is marked in every output.
"""

from __future__ import annotations

import base64
import json

import pytest
from haralyzer import HarParser
from runner import run_httptap
from servers import pattern_bytes

pytestmark = pytest.mark.root

MiB = 1 << 20
CURL = ("curl", "-sS", "--max-time", "60")


def har_entries(path) -> list[dict]:  # noqa: ANN001
    """The entries of a HAR file that haralyzer accepts, in the order they started."""
    return HarParser.from_file(str(path)).har_data["entries"]


def test_a_2mib_download_with_dump_har_and_a_request_after_it(test_host, tmp_path):
    """Issue 11 item 1: a body over the ring's record limit used to wedge the proxy's
    output; the following request was lost and the HAR had neither."""
    har = tmp_path / "out.har"
    big, small = test_host.url(f"/bytes/{2 * MiB}"), test_host.url("/files/small")
    r = run_httptap("--stderr", "--dump-har", str(har), "--", "sh", "-c",
                    f"{' '.join(CURL)} -o /dev/null {big} && {' '.join(CURL)} -o /dev/null {small}",
                    timeout=120)
    assert r.returncode == 0, r.stderr
    entries = har_entries(har)
    assert [e["request"]["url"] for e in entries] == [big, small]
    content = entries[0]["response"]["content"]
    assert content["size"] == 2 * MiB and content["encoding"] == "base64"
    assert base64.b64decode(content["text"]) == pattern_bytes("bytes", 2 * MiB)
    assert "comment" not in content
