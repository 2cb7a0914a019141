"""Output files: checked before the command starts, and created private.

Role in the run: the command line (``httptap.run.cli``) calls :func:`check_outputs` before it
hands the run to the supervisor, so a path httptap could not write fails the run at once
(one line, exit 125) instead of after the command has done its work, or, for ``--keylog``,
on every TLS connection. The stages that later write these files (the sink stage for
ndjson and HAR, the proxy for the key log, the tun stage for the pcap) create them with
:func:`open_private`.

Every file listed here may hold secrets (cookies, bodies, TLS session keys), so a file
httptap creates is mode 0600 whatever the umask. An existing file written in place keeps
its mode, as with a shell's ``>``: its owner chose it. A HAR file is always replaced
whole (a new file renamed over the old one), so it is always 0600.

What is checked, per way of writing:

- written in place (ndjson, key log, pcap): the file is opened for writing, created if it
  does not exist (and kept, like ``>`` in a shell), and given a zero-length write, which
  pseudo-files such as ``/proc/version`` refuse even to root. A FIFO or socket is only
  checked for write permission: opening a FIFO would wait for its reader.
- replaced whole (HAR): a temporary file must be creatable in its directory, and the
  path must not be a directory.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

PRIVATE_MODE = 0o600


class OutputError(Exception):
    """An output path httptap cannot write; the message is the whole line to print."""


@dataclass(frozen=True)
class OutputFile:
    what: str       # how the message names it: "HAR file", "key log", ...
    path: str
    replaced: bool  # written to a temporary file and renamed over ``path`` (HAR)


def output_files(config: Config) -> list[OutputFile]:
    """Every file the run will write, from its options (pure: no I/O)."""
    files: list[OutputFile] = []
    for spec in config.sinks:
        kind, _, path = spec.partition(":")
        if kind == "har" and path:
            files.append(OutputFile("HAR file", path, replaced=True))
        elif kind == "ndjson" and path and path != "-":
            files.append(OutputFile("ndjson file", path, replaced=False))
    if config.keylog:
        files.append(OutputFile("key log", config.keylog, replaced=False))
    if config.dump_pcap:
        files.append(OutputFile("pcap file", config.dump_pcap, replaced=False))
    return files


def check_outputs(config: Config) -> None:
    """Raise :class:`OutputError` for the first output path that cannot be written."""
    for output in output_files(config):
        try:
            if output.replaced:
                _check_replaceable(output.path)
            else:
                _check_writable(output.path)
        except OSError as exc:
            where = (f": cannot create files in {exc.filename}"
                     if exc.filename and exc.filename != output.path else "")
            raise OutputError(f"cannot write the {output.what} {output.path}{where}: "
                              f"{exc.strerror or exc}") from None


def open_private(path: str, flags: int) -> int:
    """Open ``path`` for writing (``flags``: O_WRONLY plus O_TRUNC or O_APPEND...),
    creating it with mode 0600 whatever the umask; an existing file keeps its mode."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_MODE)
    except FileExistsError:
        return os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # the umask may have taken bits away (0277: 0400)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_writable(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
    if st is not None and (stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
        # A FIFO's reader may come later (open would wait for it); a socket cannot be
        # opened at all: permission is all we can check.
        if not os.access(path, os.W_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return
    fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    try:
        os.write(fd, b"")  # procfs and sysfs files refuse even this (EIO, EINVAL)
    finally:
        os.close(fd)


def _check_replaceable(path: str) -> None:
    if os.path.isdir(path):
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, directory) from None
    os.close(fd)
    os.unlink(tmp)
