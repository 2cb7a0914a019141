"""WebSocket frames and permessage-deflate payloads as a peer writes them (tests only).

Shared by the WebSocket core's tests and the flow core's playbook tests: an independent
writer (RFC 6455 §5.2, RFC 7692 §7.2.1), so the observer is checked against frames it did
not make itself."""

from __future__ import annotations

import struct
import zlib

MASK = b"\x37\xfa\x21\x3d"  # RFC 6455 §5.7's example key


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None,
          rsv1: bool = False, rsv: int = 0) -> bytes:
    """One frame; ``mask`` given: masked with it (what a client sends)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", first, n | (0x80 if mask else 0))
    elif n < 1 << 16:
        head = struct.pack(">BBH", first, 126 | (0x80 if mask else 0), n)
    else:
        head = struct.pack(">BBQ", first, 127 | (0x80 if mask else 0), n)
    if mask:
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + body
    return head + payload


def client(opcode: int, payload: bytes, **kw: object) -> bytes:
    return frame(opcode, payload, mask=MASK, **kw)  # type: ignore[arg-type]


class Deflater:
    """A permessage-deflate sender: with context takeover (one stream for every message)
    or without (a fresh stream per message)."""

    def __init__(self, takeover: bool = True, wbits: int = 15) -> None:
        self.takeover = takeover
        self.wbits = wbits
        self.z = zlib.compressobj(wbits=-wbits)

    def message(self, data: bytes) -> bytes:
        if not self.takeover:
            self.z = zlib.compressobj(wbits=-self.wbits)
        out = self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]
