"""Header lists as every module keeps them: ``[(name, value), ...]`` in received order."""

from __future__ import annotations


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), or None."""
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None
