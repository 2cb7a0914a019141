"""Header lists as every module keeps them: ``[(name, value), ...]`` in received order."""

from __future__ import annotations


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), or None."""
    lname = name.lower()
    if lname.isascii():
        # A name whose lower case equals an ASCII name has its length (no character
        # lowers to several ASCII ones): most names are told apart without lower().
        size = len(lname)
        for key, value in headers:
            if len(key) == size and key.lower() == lname:
                return value
        return None
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None
