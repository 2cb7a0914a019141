"""The command line without running anything: which sinks a run gets, -h, completion."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from httptap.run.cli import choose_sinks


@pytest.mark.parametrize("specs, dump_har, quiet, stderr, expected", [
    ([], None, False, False, ["terminal"]),
    ([], "a.har", False, False, ["terminal", "har:a.har"]),
    (["ndjson:b.ndjson"], "a.har", False, False, ["terminal", "ndjson:b.ndjson", "har:a.har"]),
    (["ndjson"], None, False, False, ["ndjson"]),                 # stdout is taken
    (["ndjson"], None, False, True, ["terminal", "ndjson"]),      # the terminal goes to stderr
    (["ndjson", "terminal"], None, False, False, ["ndjson", "terminal"]),
    ([], "a.har", True, False, ["har:a.har"]),
    ([], None, True, False, []),
    (["terminal"], None, True, False, ["terminal"]),              # asked for by name
])
def test_the_terminal_stays_on_unless_stdout_is_taken_or_quiet(specs, dump_har, quiet, stderr,
                                                               expected):
    assert choose_sinks(specs, dump_har, quiet=quiet, use_stderr=stderr) == expected


def _httptap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "httptap", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(flag):
    r = _httptap(flag)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: httptap [OPTIONS] [COMMAND]...")
    assert "--quiet" in r.stdout and "--show-completion" in r.stdout


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o default -F"),
                                           ("zsh", "compdef"), ("fish", "complete --command")])
def test_show_completion(shell, marker):
    r = _httptap("--show-completion", shell)
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout and "httptap" in r.stdout


def test_completion_completes_options():
    r = subprocess.run([sys.executable, "-m", "httptap"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "_HTTPTAP_COMPLETE": "complete_bash",
                                        "COMP_WORDS": "httptap --dump-h", "COMP_CWORD": "1"})
    assert r.stdout.split() == ["--dump-har"], r.stderr


def test_each_line_on_stderr_is_one_write_even_unbuffered():
    """With PYTHONUNBUFFERED, stderr writes a print's text and its newline separately, and
    the command's own stderr output could land between them (seen: "...expiredc" then
    "url: (35) ..." from curl). ``whole_lines`` makes each line one write."""
    import io

    from httptap.run.cli import whole_lines

    class Raw(io.RawIOBase):
        def __init__(self) -> None:
            self.writes: list[bytes] = []

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # noqa: ANN001
            self.writes.append(bytes(b))
            return len(b)

    def printed(fix: bool) -> list[bytes]:
        raw = Raw()
        # As Python makes sys.stderr under PYTHONUNBUFFERED: text straight over the raw file.
        stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # type: ignore[type-var]
        if fix:
            whole_lines(stream)
        print("httptap: TLS to x failed: certificate has expired", file=stream, flush=True)
        print("httptap:", "two", "parts", file=stream)
        return raw.writes

    assert printed(fix=False)[:2] == [b"httptap: TLS to x failed: certificate has expired", b"\n"]
    assert printed(fix=True) == [b"httptap: TLS to x failed: certificate has expired\n",
                                 b"httptap: two parts\n"]
