"""The command line: ``httptap [OPTIONS] -- COMMAND [ARGS...]``.

Parses options (typer), checks their values into a :class:`~httptap.run.config.Config`
(``run.args``, which also parses plain command lines quickly, without typer) and hands it
to the supervisor. Every option also reads ``HTTPTAP_<NAME>`` from the environment.
Bad values exit 125 with one line, as every httptap failure does.
"""

from __future__ import annotations

from . import timeline  # first: its clock starts here ("interpreter up")

import gc
import sys
from typing import Annotated, Optional

import typer

from .. import __version__

from .args import (EXIT_HTTPTAP_FAILED, MAX_ID, OptionError, choose_sinks,  # noqa: F401
                   execute, make_config, parse_ports, resolve_user, spread_multi_values)
from .args import parse_size as _parse_size


def parse_size(text: str, flag: str) -> int:
    """``"16M"`` -> 16777216 (see ``run.args.parse_size``), with typer's error."""
    try:
        return _parse_size(text, flag)
    except OptionError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.param_hint) from None


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
    try:
        config = make_config(
            command=command, http=http, https=https, head=head, body=body,
            max_body_size=max_body_size, print_dns=print_dns, dump_har=dump_har, sink=sink,
            stats=stats, stats_interval=stats_interval, workers=workers, no_exit=no_exit,
            user=user, no_new_user_namespace=no_new_user_namespace, no_overlay=no_overlay,
            tun=tun, subnet=subnet, gateway=gateway, dump_tcp=dump_tcp, stderr=stderr,
            verbose=verbose, quiet=quiet, ca=ca, dump_pcap=dump_pcap, keylog=keylog,
            insecure=insecure, no_intercept=no_intercept)
    except OptionError as exc:
        raise typer.BadParameter(exc.message, param_hint=exc.param_hint) from None
    raise typer.Exit(execute(config))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``httptap`` script and ``python -m httptap``."""
    timeline.mark("imports done")
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
