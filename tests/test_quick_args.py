"""run.args: the quick parser that ``python -m httptap`` tries before typer gives the same
Config as the typer command for every command line it takes, and leaves the rest to typer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httptap.run import args, cli


def typer_config(argv: list[str], monkeypatch: pytest.MonkeyPatch):
    """The Config the typer command builds for ``argv`` (None when it refuses it)."""
    seen = []
    monkeypatch.setattr(cli, "execute", lambda config: seen.append(config) or 0)
    code = cli.main(argv)
    return seen[0] if code == 0 and seen else None


def quick_config(argv: list[str], environ: dict[str, str] | None = None):
    values = args.quick_parse(argv, environ or {})
    if values is None:
        return None
    try:
        return args.make_config(**values)
    except args.OptionError:
        return None


TAKEN = [
    ["--", "true"],
    ["--"],
    ["--http", "18080", "--https", "18443", "--stats", "--stderr", "--", "true"],
    ["--http", "80", "8080", "--http", "81,82", "--", "curl", "-s", "--", "x"],
    ["-v", "-q", "--head", "--body", "--print-dns", "--no-exit", "--dump-tcp", "--insecure",
     "--no-overlay", "--", "sh", "-c", "echo hi"],
    ["--max-body-size", "1K", "--workers", "3", "--stats-interval", "0.5", "--tun", "tap0",
     "--subnet", "10.9.8.7/16", "--gateway", "10.9.0.1", "--", "x"],
    ["--sink", "ndjson", "--sink", "har:/tmp/x.har", "--dump-har", "/tmp/y.har",
     "--no-intercept", "a.com,*.B.com", "--no-intercept", "c.org", "--", "x"],
    ["--ca", "/tmp/ca", "--keylog", "/tmp/k", "--dump-pcap", "/tmp/p", "--user", "0", "--", "x"],
    ["--quiet", "--sink", "ndjson:/tmp/o", "--", "x"],
]


@pytest.mark.parametrize("argv", TAKEN)
def test_a_plain_command_line_gives_the_typer_commands_config(argv, monkeypatch):
    if "--user" in argv or "--no-new-user-namespace" in argv:
        pytest.importorskip("pwd")
    quick = quick_config(argv)
    assert quick is not None
    assert quick == typer_config(argv, monkeypatch)


@pytest.mark.parametrize("argv", [
    ["--http=80", "--", "x"], ["-h"], ["--help"], ["-V"], ["--version"], ["true"], [],
    ["--show-completion", "bash"], ["--workers", "0", "--", "x"], ["--workers", "x", "--", "x"],
    ["--stats-interval", "nan", "--", "x"], ["--stats-interval", "-1", "--", "x"],
    ["-v", "--verbose", "--", "x"], ["--tun", "a", "--tun", "b", "--", "x"],
    ["--bogus", "--", "x"], ["-vq", "--", "x"], ["--user", "--", "x"], ["--http", "--", "x"],
    ["--gateway", "1.2.3.4", "--", "x"], ["--", ""], ["--max-body-size", "lots", "--", "x"],
    ["--sink", "file:/x", "--", "x"],
])
def test_anything_else_is_left_to_typer(argv):
    assert args.quick_main(argv, {}) is None


def test_an_httptap_variable_in_the_environment_is_left_to_typer():
    assert args.quick_parse(["--", "true"], {"HTTPTAP_HEAD": "1"}) is None
    assert args.quick_parse(["--", "true"], {"HTTPTAP": "1"}) is not None  # set in the namespace


FLAGS = sorted(args._FLAGS)
VALUES = {"--max-body-size": ["16M", "1K", "0", "x"], "--dump-har": ["/tmp/a.har"],
          "--stats-interval": ["0", "2.5", "-3", "inf"], "--workers": ["1", "2", "65", "08"],
          "--tun": ["httptap", "t0", "a/b", ""], "--subnet": ["10.1.1.100/24", "10.2.0.9/16", "x"],
          "--gateway": ["10.1.1.1", "10.2.0.1", "10.9.9.9"], "--ca": ["/tmp/ca"],
          "--dump-pcap": ["/tmp/p"], "--keylog": ["/tmp/k"], "--user": ["0", "root"],
          "--http": ["80", "1,2", "0", "99999"], "--https": ["443", "8443"],
          "--sink": ["terminal", "ndjson", "har:/tmp/h", "bad"],
          "--no-intercept": ["a.com", "*.B.org,c.net"]}
OPTION = st.one_of(st.sampled_from(FLAGS).map(lambda f: [f]),
                   st.sampled_from(sorted(VALUES)).flatmap(
                       lambda f: st.sampled_from(VALUES[f]).map(lambda v: [f, v])))


@given(st.lists(OPTION, max_size=6), st.sampled_from([["true"], ["sh", "-c", "x"], []]))
def test_whatever_the_quick_parser_takes_typer_parses_alike(options, command):
    argv = [word for option in options for word in option] + ["--", *command]
    quick = quick_config(argv)
    if quick is None:
        return  # typer's to parse
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert quick == typer_config(argv, monkeypatch)
