"""The send buffer: bytes queued for the peer, from SND.UNA on, without copying them.

The application hands us ``bytes`` chunks (the proxy's reads, up to 256 KiB each). A
``bytearray`` would copy every byte in and copy it out again for each segment; this
buffer keeps the chunks as they are and gives out segment payloads as memoryviews of
them (``bytes`` are immutable, so a view stays valid after the chunk leaves the buffer).
Only a segment that spans two chunks is copied, once.

A chunk may also be a ``memoryview`` that its owner keeps valid and unchanged until the
bytes are acknowledged (the tcp stage hands over views of the ring they arrived in,
saving the copy out of it), or until :meth:`SendBuffer.own` copies such chunks into
bytes of their own (the owner wants its memory back before the peer acknowledges).

Chunks live in a list with a start index (dropping acknowledged data is O(1) amortised),
and a cursor remembers where the last lookup ended: segments are cut in order, so
finding the next one costs O(1) instead of a scan from the front.
"""

from __future__ import annotations

SMALL = 16 << 10  # chunks smaller than this are merged on append: bounds their number


class SendBuffer:
    __slots__ = ("_chunks", "_first", "_skip", "_len", "_cur_index", "_cur_offset")

    def __init__(self) -> None:
        self._chunks: list[bytes | memoryview] = []
        self._first = 0        # index of the first live chunk in _chunks
        self._skip = 0         # bytes of that chunk already acknowledged
        self._len = 0
        # Cursor: chunk index and the buffer offset at which that chunk starts.
        self._cur_index = 0
        self._cur_offset = 0

    def __len__(self) -> int:
        return self._len

    def append(self, data: bytes | memoryview) -> None:
        """Queue ``data``: bytes, or a memoryview kept as it is (see the module's docstring;
        anything else is copied)."""
        if not data:
            return
        chunks = self._chunks
        if len(data) < SMALL and len(chunks) > self._first and len(chunks[-1]) < SMALL:
            # Merge small writes (an interactive stream) into one chunk. The cursor may
            # point at that last chunk: its start offset does not change.
            chunks[-1] = b"".join((chunks[-1], data))
        elif type(data) is memoryview:
            chunks.append(data)
        else:
            chunks.append(bytes(data))
        self._len += len(data)

    def own(self, upto: int = -1) -> None:
        """Copy the chunks that are views of someone else's memory into bytes: those that
        start within the first ``upto`` bytes (all with -1). After ``own()`` the buffer
        refers to no memory but its own."""
        chunks = self._chunks
        start = -self._skip  # (the first live chunk's start, as an offset from the front)
        for i in range(self._first, len(chunks)):
            if 0 <= upto <= start:
                break
            chunk = chunks[i]
            if type(chunk) is memoryview:
                chunks[i] = bytes(chunk)
            start += len(chunk)

    def drop(self, n: int) -> None:
        """Forget the first ``n`` bytes (acknowledged by the peer)."""
        if n <= 0:
            return
        if n >= self._len:
            self._chunks.clear()
            self._first = self._skip = self._len = 0
            self._cur_index = self._cur_offset = 0
            return
        self._len -= n
        chunks = self._chunks
        first = self._first
        skip = self._skip + n
        while skip >= len(chunks[first]):
            skip -= len(chunks[first])
            first += 1
        self._first, self._skip = first, skip
        # Offsets are relative to the front: move the cursor with it (or reset it).
        if self._cur_index < first:
            self._cur_index, self._cur_offset = first, -skip
        else:
            self._cur_offset -= n
        if first > 64 and first * 2 > len(chunks):  # compact now and then
            del chunks[:first]
            self._cur_index -= first
            self._first = 0

    def view(self, offset: int, n: int) -> bytes | memoryview:
        """``n`` bytes from ``offset`` (0 = the first unacknowledged byte)."""
        if n <= 0:
            return b""
        chunks = self._chunks
        index, start = self._cur_index, self._cur_offset
        if offset < start or index < self._first:
            index, start = self._first, -self._skip
        while offset >= start + len(chunks[index]):
            start += len(chunks[index])
            index += 1
        self._cur_index, self._cur_offset = index, start
        at = offset - start
        chunk = chunks[index]
        if at + n <= len(chunk):
            return memoryview(chunk)[at:at + n]
        parts = [memoryview(chunk)[at:]]
        need = n - (len(chunk) - at)
        while need > 0:
            index += 1
            piece = chunks[index]
            parts.append(memoryview(piece)[:need])
            need -= len(piece)
        return b"".join(parts)
