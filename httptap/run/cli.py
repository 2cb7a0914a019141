"""The command line: ``httptap [OPTIONS] -- COMMAND [ARGS...]``.

Parses options (typer), checks their values, builds a :class:`~httptap.run.config.Config` and
hands it to the supervisor. Every option also reads ``HTTPTAP_<NAME>`` from the environment.
Bad values exit 125 with one line, as every httptap failure does.
"""

from __future__ import annotations

from . import timeline  # first: its clock starts here ("interpreter up")

import gc
import ipaddress
import os
import sys
from typing import Annotated, Optional

import typer

from .. import __version__
from .config import Config
from .early import whole_lines

EXIT_HTTPTAP_FAILED = 125
MAX_ID = 4294967294  # uid_t is 32 bits and (uid_t)-1 means "no change" to setuid(2)

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
                raise typer.BadParameter(f"{part!r} is not a TCP port (1-65535)", param_hint=flag)
            ports.add(int(part))
    return frozenset(ports)


def _check_sink(spec: str) -> str:
    kind, _, path = spec.partition(":")
    if kind not in ("terminal", "ndjson", "har") or (kind == "har" and not path) or (
            kind == "terminal" and path):
        raise typer.BadParameter(
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
        raise typer.BadParameter(f"{text!r} is not a size (a number of bytes, or with K, M "
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
            raise typer.BadParameter(f"no such user: {user!r}", param_hint="--user") from None
        uid = int(user)
        if uid > MAX_ID:
            raise typer.BadParameter(f"{user} is not a user id (0-{MAX_ID})",
                                     param_hint="--user") from None
        return uid, uid, user, "/"  # a bare uid without a passwd entry
    return entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir


def _version(value: bool) -> None:
    if value:
        from ..compiled import describe
        print(f"httptap {__version__} ({describe()})")
        raise typer.Exit(0)


def _env(name: str) -> str:
    return "HTTPTAP_" + name.upper().replace("-", "_")


# Completion for bash, zsh and fish: typer's --install-completion and --show-completion.
app = typer.Typer(add_completion=True)


@app.command(context_settings={"allow_interspersed_args": False,
                               "ignore_unknown_options": False,
                               "help_option_names": ["-h", "--help"]})
def run(
    command: Annotated[Optional[list[str]], typer.Argument(
        help="The command to run (after --); default $SHELL, else /bin/sh")] = None,
    http: Annotated[Optional[list[str]], typer.Option(
        "--http", metavar="PORT", envvar=_env("http"), help="TCP ports decoded as plain HTTP (default 80)")] = None,
    https: Annotated[Optional[list[str]], typer.Option(
        "--https", metavar="PORT", envvar=_env("https"), help="TCP ports where TLS is intercepted (default 443)")] = None,
    head: Annotated[bool, typer.Option("--head", envvar=_env("head"), help="print request and response headers")] = False,
    body: Annotated[bool, typer.Option("--body", envvar=_env("body"), help="print request and response bodies")] = False,
    max_body_size: Annotated[str, typer.Option(metavar="SIZE", envvar=_env("max_body_size"),
        help="keep up to SIZE of each body for --body, HAR and ndjson (K, M, G suffixes)")] = "16M",
    print_dns: Annotated[bool, typer.Option("--print-dns", envvar=_env("print_dns"), help="print DNS queries and answers")] = False,
    dump_har: Annotated[Optional[str], typer.Option(metavar="PATH", envvar=_env("dump_har"), help="write a HAR file of every exchange")] = None,
    sink: Annotated[Optional[list[str]], typer.Option(metavar="SPEC", 
        envvar=_env("sink"), help="terminal | ndjson | ndjson:PATH | har:PATH (repeatable)")] = None,
    stats: Annotated[bool, typer.Option("--stats", envvar=_env("stats"), help="print per-stage throughput at exit")] = False,
    stats_interval: Annotated[float, typer.Option(metavar="S", envvar=_env("stats_interval"), min=0.0,
                                                  help="also print it every S seconds")] = 0.0,
    workers: Annotated[int, typer.Option(metavar="N", envvar=_env("workers"), min=1, max=64,
                                         help="tcp and proxy shards")] = 1,
    no_exit: Annotated[bool, typer.Option("--no-exit", envvar=_env("no_exit"),
                                          help="keep proxying after the command exits, until interrupted")] = False,
    user: Annotated[Optional[str], typer.Option(metavar="NAME|UID", envvar=_env("user"), help="run the command as this user (name or uid)")] = None,
    no_new_user_namespace: Annotated[bool, typer.Option("--no-new-user-namespace", 
        envvar=_env("no_new_user_namespace"), help="as root: do not create a user namespace")] = False,
    no_overlay: Annotated[bool, typer.Option("--no-overlay", 
        envvar=_env("no_overlay"), help="do not replace resolv.conf or CA bundles in the namespace")] = False,
    tun: Annotated[str, typer.Option(metavar="NAME", envvar=_env("tun"), help="name of the TUN device")] = "httptap",
    subnet: Annotated[str, typer.Option(metavar="CIDR", envvar=_env("subnet"), help="address and prefix of the TUN device")] = "10.1.1.100/24",
    gateway: Annotated[str, typer.Option(metavar="IP", envvar=_env("gateway"), help="gateway (and DNS server) address")] = "10.1.1.1",
    dump_tcp: Annotated[bool, typer.Option("--dump-tcp", envvar=_env("dump_tcp"), help="print a line for every packet")] = False,
    stderr: Annotated[bool, typer.Option("--stderr", envvar=_env("stderr"), help="write httptap's output to stderr")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", envvar=_env("verbose"),
                                          help="also print setup notes and upstream errors")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", envvar=_env("quiet"),
                                        help="no terminal output (errors still print)")] = False,
    version: Annotated[bool, typer.Option("-V", "--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
    ca: Annotated[Optional[str], typer.Option(metavar="DIR", envvar=_env("ca"), help="load the CA from DIR, or create it there")] = None,
    dump_pcap: Annotated[Optional[str], typer.Option(metavar="PATH", envvar=_env("dump_pcap"), help="write TUN packets to a pcap file")] = None,
    keylog: Annotated[Optional[str], typer.Option(metavar="PATH", envvar=_env("keylog"), help="write TLS secrets in NSS key-log format")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", envvar=_env("insecure"), help="do not verify upstream certificates")] = False,
    no_intercept: Annotated[Optional[list[str]], typer.Option(
        "--no-intercept", metavar="HOST", envvar=_env("no_intercept"),
        help="relay TLS to these hosts (globs: '*.example.com') untouched, for clients that pin certificates")] = None,
) -> None:
    """Run COMMAND in its own network namespace and show every HTTP and HTTPS request it makes."""
    argv = list(command or [])
    if not argv:
        argv = [os.environ.get("SHELL") or "/bin/sh"]
    if not argv[0]:
        raise typer.BadParameter("the command name is empty", param_hint="COMMAND")
    sinks = choose_sinks(sink or [], dump_har, quiet=quiet, use_stderr=stderr)
    try:
        iface = ipaddress.IPv4Interface(subnet)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--subnet") from None
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--gateway") from None
    if gw not in iface.network or gw == iface.ip:
        raise typer.BadParameter(f"{gateway} must be another address in {iface.network}",
                                 param_hint="--gateway")
    if not tun or len(tun) > 15 or "/" in tun or tun.strip() != tun:
        raise typer.BadParameter("a device name has 1 to 15 characters, no '/' or spaces",
                                 param_hint="--tun")
    if no_new_user_namespace and os.geteuid() != 0:
        raise typer.BadParameter("only root can run without a new user namespace",
                                 param_hint="--no-new-user-namespace")
    run_as = resolve_user(user) if user else None
    if run_as and run_as[0] != os.getuid() and os.geteuid() != 0:
        raise typer.BadParameter("only root can run the command as another user "
                                 "(an unprivileged user namespace maps just your own uid)",
                                 param_hint="--user")
    config = Config(
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
    timeline.enable(verbose)
    timeline.mark("options parsed")
    # Before anything starts: a path we could not write must not cost the command's run.
    from .outputs import OutputError, check_outputs
    try:
        check_outputs(config)
    except OutputError as exc:
        print(f"httptap: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_HTTPTAP_FAILED) from None
    from .supervisor import run_supervisor
    code = run_supervisor(config)
    timeline.mark(f"exit {code}")
    raise typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """The command line, parsed and run (``httptap.__main__``, the entry point, forks the
    launcher first; a caller in-process gets one forked when the run needs it)."""
    timeline.mark("imports done")
    whole_lines(sys.stderr)
    # No collection during start-up (see httptap.__main__); back on when it was on, for a
    # caller that is not the httptap process (tests).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if collecting:
            gc.enable()


def _main(argv: list[str] | None) -> int:
    args = spread_multi_values(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="httptap", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.BadParameter, typer.Abort) as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"httptap: {message}", file=sys.stderr)
        return EXIT_HTTPTAP_FAILED
    except Exception as exc:  # click's UsageError and friends
        if type(exc).__name__.endswith(("UsageError", "NoSuchOption", "BadOptionUsage",
                                        "MissingParameter", "BadArgumentUsage")):
            print(f"httptap: {exc.format_message()}  (see httptap --help)",  # type: ignore[attr-defined]
                  file=sys.stderr)
            return EXIT_HTTPTAP_FAILED
        raise
