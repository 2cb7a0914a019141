"""httptap: run a program in its own network namespace and show every HTTP(S) request it makes.

Map of the package, in the order data flows (see ../shared/DESIGN.md for the why):

- ``run/``       the run: ``cli`` (options into a ``Config``), ``supervisor`` (the httptap
                 process: makes the rings, forks the stages, launches the command, waits,
                 drains, exits with its status; ``trustmaker`` makes the CA and the trust
                 files alongside; ``drain`` ends the pipeline, with ``drainrules``
                 to say when it is stuck),
                 ``early`` (the launcher and the trust maker, forked before the options
                 are parsed),
                 ``namespace`` (the launcher: user, net, mount and PID namespaces, the TUN
                 device configured with pyroute2, exec), ``outputs``
                 (output files checked before the command starts), ``signalrelay``,
                 ``timeline`` (what ``-v`` says of the start-up).
- ``plumbing/``  what joins the processes: ``ring`` (shared-memory SPSC rings),
                 ``boxes`` (a stage's Inbox and Outbox on them), ``messages`` (every
                 message that crosses them), ``stats`` (``--stats``).
- ``stages/``    one module per pipeline process: ``tcp`` (each shard reads and writes
                 its own queue of the TUN device; its logic is ``tcpshard``), ``proxy`` (upstream sockets; ``relay``
                 carries out a flow core's commands, ``datagrams`` is UDP and DNS),
                 ``sink``; ``tun`` only with --dump-pcap; ``base`` is what they share.
- pure cores, by layer (bytes and ``now`` in, events and bytes out, no I/O):
  - ``net/``     ``wire`` (IP, UDP, ICMP packets) and ``tcp/`` (a full TCP peer);
  - ``tls/``     ``clienthello``, ``tlsterm`` (both TLS sessions over memory BIOs), with
                 ``ca`` and ``trust`` (the run's CA, and the files that make it trusted),
                 ``pending`` (the CA's way to a proxy forked before it existed);
  - ``http/``    ``http1`` (with ``h1heads``, ``h1sides``, ``h1readers``), ``http2``
                 (with ``h2frames``, ``h2reset``), their ``events``,
                 ``contentcoding``, ``headers``, ``report`` (events into the sink's
                 messages), ``websocket`` with ``wsreport``;
  - ``flow/``    ``core``: one proxied connection (what it is, TLS, credit), with
                 ``decoding`` (its HTTP observer, reporter and protocol switches),
                 ``sniff`` (first bytes), ``commands``: what it asks the proxy stage to do;
  - ``dns/``     ``message`` (the wire format), with ``resolver`` (the host's answers);
  - ``events``   the base class of every core's events.
- ``sinks/``     the output formats: terminal, ndjson, HAR.
- ``compiled``   which pure cores ``setup.py`` compiles with mypyc, and what ``-V`` says;
                 the code below keeps a stale compiled module from shadowing its source.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Compiled cores (``httptap.compiled``): an editable install compiles some cores in place,
# their .so next to their .py, and the import system prefers the .so. A .py edited since
# must never be shadowed by its stale .so, so the build leaves a stamp of each compiled
# source (mtime and size); when one differs, or HTTPTAP_PURE=1 is set, every httptap
# module loads from its .py. All or none: compiled modules call each other natively, past
# sys.modules. Cost when nothing changed: one small read and one stat per compiled module.
import os as _os
import sys as _sys

TYPE_CHECKING = False       # (not typing's: importing typing costs milliseconds)
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec


def _pure_reason() -> tuple[str, bool]:
    """Why this process does not run the compiled cores ("" if it may), and whether the
    .py files must be forced (a compiled .so may be there)."""
    if _os.environ.get("HTTPTAP_PURE", "") not in ("", "0"):
        return "HTTPTAP_PURE is set", True
    try:
        with open(_os.path.join(__path__[0], "_build.stamp"), encoding="utf-8") as f:
            first, *sources = f.read().splitlines()
    except (OSError, ValueError):
        return "", False    # not built in place: the import system finds what is installed
    if first != "compiled":
        return first.partition(": ")[2], False     # the build fell back: no .so was left
    root = _os.path.dirname(__path__[0])
    for line in sources:
        path, mtime, size = line.rsplit(" ", 2)
        try:
            st = _os.stat(_os.path.join(root, path))
        except OSError:
            return f"{path} is gone since it was compiled", True
        if st.st_mtime_ns != int(mtime) or st.st_size != int(size):
            return f"{path} changed since it was compiled (pip install -e . again)", True
    return "", False


class _SourceFinder:
    """Finds each ``httptap.*`` module's .py, never the compiled .so beside it."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if not name.startswith("httptap.") or not isinstance(path, list) or not path:
            return None
        source = _os.path.join(path[0], name.rpartition(".")[2] + ".py")
        if not _os.path.isfile(source):
            return None         # a package, or not ours: the usual finders
        from importlib.util import spec_from_file_location
        return spec_from_file_location(name, source)


#: Why the compiled cores are not used here, for ``httptap -V`` ("" when they are, or
#: when this install has none to use).
pure_reason, _force_source = _pure_reason()
if _force_source:
    _sys.meta_path.insert(0, _SourceFinder)
