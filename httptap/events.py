"""The base of every pure core's events (TCP, HTTP, WebSocket): slotted objects with
value equality and a readable repr, so a test compares the exact events it expects."""

from __future__ import annotations


class Event:
    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __hash__(self) -> int:  # (raises TypeError for an event holding a list, as it should)
        return hash((type(self),) + tuple(getattr(self, s) for s in self.__slots__))

    def __repr__(self) -> str:
        args = ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__)
        return f"{type(self).__name__}({args})"
