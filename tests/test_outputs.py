"""Output paths checked before the command starts, and files created private (0600).

``httptap.run.outputs`` directly (no namespace, no root), the sinks and the pcap writer
creating their files, and the command line refusing bad paths and ids with one line.
Anything that depends on the umask runs in a child process given that umask, so this
process's own umask (shared with every other test) is never changed.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import textwrap
from pathlib import Path

import pytest

from httptap.run import cli
from httptap.run.config import Config
from httptap.run.outputs import OutputError, OutputFile, check_outputs, open_private, output_files


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _under_umask(mask: int, code: str) -> None:
    """Run ``code`` in a child Python whose umask is ``mask``."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], umask=mask,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# --- which files ---------------------------------------------------------------------------

def test_output_files_lists_every_file_the_run_writes():
    config = Config(command=("true",), sinks=("terminal", "ndjson", "ndjson:-", "ndjson:a.ndjson",
                                              "har:b.har"),
                    keylog="keys.txt", dump_pcap="run.pcap")
    assert output_files(config) == [
        OutputFile("ndjson file", "a.ndjson", replaced=False),
        OutputFile("HAR file", "b.har", replaced=True),
        OutputFile("key log", "keys.txt", replaced=False),
        OutputFile("pcap file", "run.pcap", replaced=False),
    ]
    assert output_files(Config(command=("true",))) == []


# --- the checks ----------------------------------------------------------------------------

def _check(**options: object) -> None:
    check_outputs(Config(command=("true",), **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["ndjson", "har", "keylog", "dump_pcap"])
def test_a_missing_directory_fails_naming_the_path_and_the_reason(tmp_path, option):
    path = str(tmp_path / "missing" / "out")
    options = {"sinks": (f"{option}:{path}",)} if option in ("ndjson", "har") else {option: path}
    with pytest.raises(OutputError) as info:
        _check(**options)
    message = str(info.value)
    assert path in message and "No such file or directory" in message
    assert "\n" not in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("option", ["ndjson", "har", "keylog", "dump_pcap"])
def test_a_directory_is_not_an_output_file(tmp_path, option):
    options = ({"sinks": (f"{option}:{tmp_path}",)} if option in ("ndjson", "har")
               else {option: str(tmp_path)})
    with pytest.raises(OutputError, match="Is a directory"):
        _check(**options)


@pytest.mark.parametrize("option", ["ndjson", "har", "keylog", "dump_pcap"])
def test_a_pseudo_file_is_refused_even_to_root(option):
    # Root may open /proc/version for writing; writing fails (EIO), creating beside it too.
    path = "/proc/version"
    options = {"sinks": (f"{option}:{path}",)} if option in ("ndjson", "har") else {option: path}
    with pytest.raises(OutputError, match="/proc/version"):
        _check(**options)


def test_in_place_files_are_created_private_and_kept(tmp_path):
    paths = {name: tmp_path / name for name in ("a.ndjson", "keys.txt", "run.pcap")}
    _under_umask(0, f"""
        from httptap.run.config import Config
        from httptap.run.outputs import check_outputs
        check_outputs(Config(command=("true",), sinks=("ndjson:{paths['a.ndjson']}",),
                             keylog="{paths['keys.txt']}", dump_pcap="{paths['run.pcap']}"))
    """)
    for path in paths.values():
        assert path.read_bytes() == b""
        assert _mode(path) == 0o600  # umask 0 would have given 0666


def test_an_existing_file_keeps_its_contents_and_mode(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("CLIENT_RANDOM earlier run\n")
    path.chmod(0o640)
    _check(keylog=str(path), sinks=(f"ndjson:{path}",))
    assert path.read_text() == "CLIENT_RANDOM earlier run\n"  # the check truncates nothing
    assert _mode(path) == 0o640


def test_the_har_check_leaves_nothing_behind(tmp_path):
    _check(sinks=(f"har:{tmp_path / 'out.har'}",))
    assert os.listdir(tmp_path) == []  # the HAR is written at exit, renamed into place


def test_a_fifo_without_a_reader_passes_without_waiting(tmp_path):
    fifo = tmp_path / "events"
    os.mkfifo(fifo)
    done = threading.Event()

    def check() -> None:
        _check(sinks=(f"ndjson:{fifo}",), dump_pcap=str(fifo))
        done.set()

    threading.Thread(target=check, daemon=True).start()
    assert done.wait(timeout=30), "the check waited for the FIFO's reader"


def test_open_private_makes_0600_whatever_the_umask(tmp_path):
    path = tmp_path / "f"
    _under_umask(0o277, f"""
        import os
        from httptap.run.outputs import open_private
        os.close(open_private("{path}", os.O_WRONLY | os.O_TRUNC))
    """)
    assert _mode(path) == 0o600  # umask 0277 alone would have given 0400
    path.chmod(0o644)
    fd = open_private(str(path), os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert _mode(path) == 0o644  # an existing file keeps the mode its owner gave it


# --- the writers create private files ------------------------------------------------------

def test_sinks_and_pcap_create_their_files_0600(tmp_path):
    har, ndjson, pcap = tmp_path / "out.har", tmp_path / "out.ndjson", tmp_path / "run.pcap"
    _under_umask(0, f"""
        from httptap.sinks import HarSink, NdjsonSink
        from httptap.stages.tun import open_pcap
        HarSink("{har}").close()
        NdjsonSink("{ndjson}").close()
        open_pcap("{pcap}").close()
    """)
    assert {p.name: _mode(p) for p in (har, ndjson, pcap)} == dict.fromkeys(
        ("out.har", "out.ndjson", "run.pcap"), 0o600)


# --- the command line: one line, exit 125, nothing run -------------------------------------

def _main(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_a_bad_output_path_stops_before_the_command(capsys, tmp_path):
    marker = tmp_path / "ran"
    code, err = _main(capsys, "--dump-har", str(tmp_path / "no" / "x.har"), "--",
                      "touch", str(marker))
    assert code == 125
    assert err.startswith("httptap: ") and err.count("\n") == 1
    assert str(tmp_path / "no" / "x.har") in err and "No such file or directory" in err
    assert not marker.exists()


def test_a_uid_beyond_32_bits_is_a_clear_error(capsys):
    code, err = _main(capsys, "--user", "99999999999", "--", "true")
    assert code == 125
    assert err.count("\n") == 1 and "99999999999 is not a user id" in err


def test_an_empty_command_name_is_a_clear_error(capsys):
    code, err = _main(capsys, "--", "")
    assert code == 125
    assert err.count("\n") == 1 and "the command name is empty" in err
