"""What the test hosts serve and the limits they keep: shared constants, the deterministic
content (``pattern_chunks``, ``gzip_plain``, ``chunk_sizes``) and the ETag rule.

Imported both by the servers (inside the test hosts' namespaces) and by the tests, which
compare what came through httptap with these; standard library only.
"""

from __future__ import annotations

import functools
import random
import re
import struct
from collections.abc import Iterator

MiB = 1 << 20
PAGE = 4096
IDLE_TIMEOUT = 120.0          # seconds a connection may sit idle before the server drops it
HANDSHAKE_TIMEOUT = 10.0      # seconds for a TLS handshake
CGI_TIMEOUT = 60.0            # seconds for one `git http-backend` run
IO_CHUNK = 1 << 20
MAX_UPLOAD_LINE = 4096        # longest chunk-size or trailer line accepted
MAX_BYTES = 1 << 34           # largest /bytes/<n> served (16 GiB)
MAX_GZIP = 64 * MiB           # largest /gzip/<n> and /chunked/<n>
MAX_CGI_BODY = 64 * MiB       # largest request body passed to git http-backend
MAX_WS_FRAME = 16 * MiB       # largest WebSocket frame echoed

ETAG = '"httptap-etag-1"'
ETAG_BODY = b"this body has an ETag\n"
GZIP_LINE = b"httptap test host: a line of text that compresses well\n"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DNS_TXT_NAME = "hello.httptap.test"
DNS_TXT = b"hello from the test host"
DNS_A_NAME = "a.httptap.test"
DNS_TTL = 300

_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")


# --------------------------------------------------------------------------- content pattern

@functools.lru_cache(maxsize=8)
def _base_block(seed: str) -> bytes:
    return random.Random(f"httptap-testhost:{seed}").randbytes(MiB)


def pattern_chunks(seed: str, size: int) -> Iterator[bytes]:
    """Yield ``size`` deterministic pseudo-random bytes in chunks of at most 1 MiB.

    A random 1 MiB block (fixed by ``seed``) repeated, with every 4 KiB page
    starting with its page number (8 bytes, big-endian): no two pages are
    equal, so a lost, repeated or reordered page changes the content and its
    hash, while generating costs little more than a memory copy.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    block = _base_block(seed)
    pages_per_block = MiB // PAGE
    for k in range((size + MiB - 1) // MiB):
        buf = bytearray(block)
        first_page = k * pages_per_block
        for p in range(pages_per_block):
            struct.pack_into(">Q", buf, p * PAGE, first_page + p)
        remaining = size - k * MiB
        yield bytes(buf) if remaining >= MiB else bytes(buf[:remaining])


def pattern_bytes(seed: str, size: int) -> bytes:
    """All of ``pattern_chunks(seed, size)`` as one bytes object."""
    return b"".join(pattern_chunks(seed, size))


def gzip_plain(n: int) -> bytes:
    """What ``GET /gzip/<n>`` decodes to: n bytes of repeated ``GZIP_LINE`` text."""
    return (GZIP_LINE * (n // len(GZIP_LINE) + 1))[:n]


def chunk_sizes(n: int) -> list[int]:
    """The sizes of the chunks ``GET /chunked/<n>`` sends: about four, at most 64 KiB each."""
    step = max(1, min(64 * 1024, -(-n // 4)))
    return [min(step, n - i) for i in range(0, n, step)]


def etag_matches(if_none_match: str) -> bool:
    """Whether an If-None-Match header value matches ``ETAG``."""
    return ETAG in [t.strip() for t in if_none_match.split(",")] or if_none_match.strip() == "*"
