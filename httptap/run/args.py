"""The command line's values without typer: checking them into a :class:`Config`, running
it, and a quick parser for the common command lines.

Role at start-up: importing typer (and click) costs ~35 ms of CPU before anything else can
start. ``python -m httptap`` first offers its arguments to :func:`quick_main`, which
handles a plain command line (known options, each once, values as separate words, a
``--`` before the command, no ``HTTPTAP_*`` variable) exactly as the typer command of
``run.cli`` would; anything else (help, completion, ``--opt=value``, an option given
twice, a value that does not check) goes to typer, which parses it again and says what is
wrong in its own words. Both build the :class:`Config` with :func:`make_config`, so the
checks live in one place; ``tests/test_cli.py`` compares the two parsers.
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from collections.abc import Mapping

from . import timeline  # first: its clock starts here ("interpreter up")
from .config import Config

EXIT_HTTPTAP_FAILED = 125
MAX_ID = 4294967294  # uid_t is 32 bits and (uid_t)-1 means "no change" to setuid(2)


class OptionError(Exception):
    """A value that does not check: ``run.cli`` shows it as typer's ``BadParameter``."""

    def __init__(self, message: str, param_hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.param_hint = param_hint


# Options that take several values after one flag (``--http 80 8080``).
_MULTI_VALUE = ("--http", "--https", "--no-intercept")


def spread_multi_values(argv: list[str]) -> list[str]:
    """Rewrite ``--http 80 8080`` as ``--http 80 --http 8080`` (only before ``--``).

    Click takes one value per occurrence; the SPEC allows a list after one flag."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        out.append(arg)
        i += 1
        if arg in _MULTI_VALUE:
            first = True
            while i < len(argv) and argv[i] != "--" and not argv[i].startswith("-"):
                if not first:
                    out.append(arg)
                out.append(argv[i])
                first = False
                i += 1
    return out


def parse_ports(values: list[str] | None, default: int, flag: str) -> frozenset[int]:
    if not values:
        return frozenset({default})
    ports: set[int] = set()
    for value in values:
        for part in value.replace(" ", ",").split(","):
            if not part:
                continue
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise OptionError(f"{part!r} is not a TCP port (1-65535)", param_hint=flag)
            ports.add(int(part))
    return frozenset(ports)


def _check_sink(spec: str) -> str:
    kind, _, path = spec.partition(":")
    if kind not in ("terminal", "ndjson", "har") or (kind == "har" and not path) or (
            kind == "terminal" and path):
        raise OptionError(
            f"{spec!r}: expected terminal, ndjson, ndjson:PATH or har:PATH", param_hint="--sink")
    return spec


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str, flag: str) -> int:
    """``"16M"`` -> 16777216: a whole number of bytes, optionally followed by K, M or G
    (powers of 1024; ``KB``, ``MiB`` and lower case are accepted too)."""
    value = text.strip().upper()
    for suffix in ("IB", "B"):
        if value.endswith(suffix) and value[:-len(suffix)][-1:] in ("K", "M", "G"):
            value = value[:-len(suffix)]
            break
    unit = value[-1:] if value[-1:] in ("K", "M", "G") else ""
    number = value[:len(value) - len(unit)].strip()
    if not number.isdigit() or not number.isascii():
        raise OptionError(f"{text!r} is not a size (a number of bytes, or with K, M "
                                 "or G: 16M)", param_hint=flag)
    return int(number) * _SIZE_UNITS[unit]


def choose_sinks(specs: list[str], dump_har: str | None, *, quiet: bool = False,
                 use_stderr: bool = False) -> list[str]:
    """The sinks of a run: those asked for, ``--dump-har``'s, and the terminal unless
    ``-q`` is given or another sink writes to stdout (a bare ``ndjson``, when the terminal
    would write there too). ``--sink terminal`` always counts."""
    sinks = [_check_sink(s) for s in specs]
    if dump_har:
        sinks.append("har:" + dump_har)
    stdout_taken = "ndjson" in sinks and not use_stderr
    if "terminal" not in sinks and not quiet and not stdout_taken:
        sinks.insert(0, "terminal")
    return sinks


def resolve_user(user: str) -> tuple[int, int, str, str]:
    """``--user NAME|UID`` as (uid, gid, name, home), from the host's user database."""
    import pwd

    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        if not user.isdigit():
            raise OptionError(f"no such user: {user!r}", param_hint="--user") from None
        uid = int(user)
        if uid > MAX_ID:
            raise OptionError(f"{user} is not a user id (0-{MAX_ID})",
                                     param_hint="--user") from None
        return uid, uid, user, "/"  # a bare uid without a passwd entry
    return entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir


def make_config(command: list[str] | None = None, http: list[str] | None = None,
                https: list[str] | None = None, head: bool = False, body: bool = False,
                max_body_size: str = "16M", print_dns: bool = False,
                dump_har: str | None = None, sink: list[str] | None = None,
                stats: bool = False, stats_interval: float = 0.0, workers: int = 1,
                no_exit: bool = False, user: str | None = None,
                no_new_user_namespace: bool = False, no_overlay: bool = False,
                tun: str = "httptap", subnet: str = "10.1.1.100/24", gateway: str = "10.1.1.1",
                dump_tcp: bool = False, stderr: bool = False, verbose: bool = False,
                quiet: bool = False, ca: str | None = None, dump_pcap: str | None = None,
                keylog: str | None = None, insecure: bool = False,
                no_intercept: list[str] | None = None) -> Config:
    """The run's :class:`Config` from the options' values (named and defaulted as the
    options of ``run.cli``); :class:`OptionError` for a value that does not check."""
    argv = list(command or [])
    if not argv:
        argv = [os.environ.get("SHELL") or "/bin/sh"]
    if not argv[0]:
        raise OptionError("the command name is empty", param_hint="COMMAND")
    sinks = choose_sinks(sink or [], dump_har, quiet=quiet, use_stderr=stderr)
    try:
        iface = ipaddress.IPv4Interface(subnet)
    except ValueError as exc:
        raise OptionError(str(exc), param_hint="--subnet") from None
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError as exc:
        raise OptionError(str(exc), param_hint="--gateway") from None
    if gw not in iface.network or gw == iface.ip:
        raise OptionError(f"{gateway} must be another address in {iface.network}",
                                 param_hint="--gateway")
    if not tun or len(tun) > 15 or "/" in tun or tun.strip() != tun:
        raise OptionError("a device name has 1 to 15 characters, no '/' or spaces",
                                 param_hint="--tun")
    if no_new_user_namespace and os.geteuid() != 0:
        raise OptionError("only root can run without a new user namespace",
                                 param_hint="--no-new-user-namespace")
    run_as = resolve_user(user) if user else None
    if run_as and run_as[0] != os.getuid() and os.geteuid() != 0:
        raise OptionError("only root can run the command as another user "
                                 "(an unprivileged user namespace maps just your own uid)",
                                 param_hint="--user")
    return Config(
        command=tuple(argv),
        http_ports=parse_ports(http, 80, "--http"),
        https_ports=parse_ports(https, 443, "--https"),
        head=head, body=body, max_body_size=parse_size(max_body_size, "--max-body-size"),
        print_dns=print_dns, sinks=tuple(sinks),
        stats=stats or stats_interval > 0, stats_interval=stats_interval, workers=workers,
        no_exit=no_exit, user=user, run_as=run_as, new_user_namespace=not no_new_user_namespace,
        overlay=not no_overlay, tun=tun, subnet=subnet, gateway=gateway, dump_tcp=dump_tcp,
        use_stderr=stderr, verbose=verbose, ca_dir=ca, dump_pcap=dump_pcap, keylog=keylog,
        insecure=insecure,
        no_intercept=tuple(g.lower() for v in no_intercept or () for g in v.replace(",", " ").split()),
    )


def execute(config: Config) -> int:
    """Run ``config``: check the output paths, then the supervisor; the exit status."""
    timeline.enable(config.verbose)
    timeline.mark("options parsed")
    # Before anything starts: a path we could not write must not cost the command's run.
    from .outputs import OutputError, check_outputs
    try:
        check_outputs(config)
    except OutputError as exc:
        print(f"httptap: {exc}", file=sys.stderr)
        return EXIT_HTTPTAP_FAILED
    from .supervisor import run_supervisor
    code = run_supervisor(config)
    timeline.mark(f"exit {code}")
    return code


# --------------------------------------------------------------------- the quick parser

_FLAGS = {
    "--head": "head", "--body": "body", "--print-dns": "print_dns", "--stats": "stats",
    "--no-exit": "no_exit", "--no-new-user-namespace": "no_new_user_namespace",
    "--no-overlay": "no_overlay", "--dump-tcp": "dump_tcp", "--stderr": "stderr",
    "-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet",
    "--insecure": "insecure",
}
_VALUES = {
    "--max-body-size": "max_body_size", "--dump-har": "dump_har",
    "--stats-interval": "stats_interval", "--workers": "workers", "--user": "user",
    "--tun": "tun", "--subnet": "subnet", "--gateway": "gateway", "--ca": "ca",
    "--dump-pcap": "dump_pcap", "--keylog": "keylog",
}
_LISTS = {"--http": "http", "--https": "https", "--sink": "sink", "--no-intercept": "no_intercept"}


def quick_parse(argv: list[str], environ: Mapping[str, str]) -> dict[str, object] | None:
    """:func:`make_config`'s arguments for a plain command line, or None when typer must
    parse it (see the module's docstring)."""
    if any(name.startswith("HTTPTAP_") for name in environ):
        return None
    args = spread_multi_values(argv)
    if "--" not in args:
        return None
    end = args.index("--")
    values: dict[str, object] = {"command": args[end + 1:]}
    i = 0
    while i < end:
        flag = args[i]
        value: object
        if flag in _FLAGS:
            name, value = _FLAGS[flag], True
            i += 1
        elif flag in _VALUES or flag in _LISTS:
            if i + 1 >= end or args[i + 1].startswith("-"):
                return None
            name, raw = _VALUES.get(flag) or _LISTS[flag], args[i + 1]
            i += 2
            if flag in _LISTS:
                values.setdefault(name, [])
                values[name].append(raw)  # type: ignore[attr-defined]
                continue
            value = _number(name, raw)
            if value is None:
                return None
        else:
            return None
        if name in values:
            return None  # given twice (or -v and --verbose): typer's rules decide
        values[name] = value
    return values


def _number(name: str, raw: str) -> object | None:
    """The value of a single-valued option, converted as typer does; None: let typer say."""
    if name == "workers":
        return int(raw) if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 64 else None
    if name == "stats_interval":
        try:
            number = float(raw)
        except ValueError:
            return None
        return number if math.isfinite(number) and number >= 0 else None
    return raw


def quick_main(argv: list[str], environ: Mapping[str, str] = os.environ) -> int | None:
    """Run a plain command line without typer; None when typer must take it."""
    values = quick_parse(argv, environ)
    if values is None:
        return None
    timeline.mark("imports done")
    try:
        config = make_config(**values)  # type: ignore[arg-type]
    except OptionError:
        return None  # typer says what is wrong, in its words
    return execute(config)
