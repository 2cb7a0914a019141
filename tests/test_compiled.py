"""The compiled cores (``httptap/compiled.py``, built by ``setup.py`` with mypyc): ``-V``
tells the truth, a build that can compile did, no compiled module is older than its
source, an edited source is never shadowed by its stale .so, and the pure cores' tests
pass on the pure-Python modules too (the rest of the suite runs on what is installed:
the compiled build in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from httptap import compiled

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "httptap"
STAMP = PACKAGE / compiled.STAMP

# The tests of the compiled modules' logic, run once more on the .py files.
PURE_CORE_TESTS = ["test_wire.py", "test_tcp_core.py", "test_tcp_parts.py", "test_tcp_pair.py",
                   "test_tcp_sendbuffer.py", "test_tcp_stage.py", "test_flowcore.py",
                   "test_flow_tables.py", "test_relay.py", "test_http1.py", "test_http2.py",
                   "test_httpreport.py", "test_dns.py", "test_pure_cores.py", "test_ring.py",
                   "test_outbox.py", "test_tcp_holding.py"]


def python(code: str, *, pure: bool = False, cwd: Path = ROOT,
           path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HTTPTAP_PURE", "PYTHONPATH")}
    if pure:
        env["HTTPTAP_PURE"] = "1"
    if path is not None:
        env["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


LOADED = ("import importlib, httptap.compiled as c\n"
          "print(' '.join(importlib.import_module(m).__file__ for m in c.MODULES))")


def loaded_files(**kw: object) -> list[str]:
    r = python(LOADED, **kw)  # type: ignore[arg-type]
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def stamp_lines() -> list[str]:
    try:
        return STAMP.read_text().splitlines()
    except FileNotFoundError:
        return []


def build_is_compiled() -> bool:
    return any(not f.endswith(".py") for f in loaded_files())


def test_version_says_what_runs() -> None:
    files = loaded_files()
    n = sum(not f.endswith(".py") for f in files)
    out = python("from httptap.run.cli import main; main(['-V'])").stdout
    if n:
        assert n == len(compiled.MODULES), files      # all or none
        assert f"(compiled: {n} modules)" in out
    else:
        assert "(pure Python" in out


def test_httptap_pure_loads_every_module_from_source() -> None:
    assert all(f.endswith(".py") for f in loaded_files(pure=True))
    out = python("from httptap.run.cli import main; main(['--version'])", pure=True).stdout
    assert "(pure Python: HTTPTAP_PURE is set)" in out


def test_a_machine_that_can_compile_did() -> None:
    """CI installs a C compiler and Python's headers (.ci/run): its build must be compiled."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not shutil.which(cc) or not headers.exists():
        pytest.skip(f"no C compiler ({cc}) or no {headers}: the install is pure Python")
    lines = stamp_lines()
    if lines and "HTTPTAP_PURE" in lines[0]:
        pytest.skip("installed with HTTPTAP_PURE=1")
    if lines and lines[0] != "compiled":
        pytest.fail(f"this machine can compile, but the build says {lines[0]!r} "
                    "(pip install -v -e . shows why)")
    if not lines and not build_is_compiled():
        pytest.skip("not an editable install with a build stamp, and nothing compiled")


def test_no_compiled_module_is_older_than_its_source() -> None:
    lines = stamp_lines()
    if not lines or lines[0] != "compiled":
        pytest.skip("no compiled in-place build here")
    stale = []
    for line in lines[1:]:
        path, mtime, size = line.rsplit(" ", 2)
        st = (ROOT / path).stat()
        if (st.st_mtime_ns, st.st_size) != (int(mtime), int(size)):
            stale.append(path)
    assert not stale, (f"changed since they were compiled: {stale}; httptap runs them as "
                       "pure Python until `pip install -e .` compiles them again")
    built = {line.rsplit(" ", 2)[0] for line in lines[1:]}
    listed = {m.replace(".", "/") + ".py" for m in compiled.MODULES}
    assert built == listed, ("httptap/compiled.py lists other modules than the build "
                             "compiled: `pip install -e .` again")


def test_an_edited_source_is_never_shadowed_by_its_stale_build(tmp_path: Path) -> None:
    if stamp_lines()[:1] != ["compiled"]:
        pytest.skip("no compiled in-place build here")
    # A copy of the package with its build (copy2 keeps the mtimes the stamp records).
    shutil.copytree(PACKAGE, tmp_path / "httptap", copy_function=shutil.copy2,
                    ignore=shutil.ignore_patterns("__pycache__"))
    probe = ("import httptap, httptap.net.wire as w, httptap.flow.core as c\n"
             "print(w.__file__, c.__file__, repr(httptap.pure_reason))")
    before = python(probe, cwd=tmp_path, path=tmp_path)
    assert before.returncode == 0, before.stderr
    wire, core, reason = before.stdout.split(" ", 2)
    assert wire.startswith(str(tmp_path)) and not wire.endswith(".py")
    assert reason.strip() == "''"

    edited = tmp_path / "httptap" / "net" / "tcp" / "rtt.py"
    edited.write_text(edited.read_text() + "\nEDITED = True\n")
    after = python(probe + "\nimport httptap.net.tcp.rtt as r; print(r.EDITED)",
                   cwd=tmp_path, path=tmp_path)
    assert after.returncode == 0, after.stderr
    first, edited_flag = after.stdout.splitlines()
    wire, core, reason = first.split(" ", 2)
    assert wire.endswith(".py") and core.endswith(".py")     # all or none
    assert "httptap/net/tcp/rtt.py changed since it was compiled" in reason
    assert edited_flag == "True"


@pytest.mark.timeout(1200)
def test_the_pure_cores_tests_pass_on_the_pure_modules() -> None:
    if not build_is_compiled():
        pytest.skip("the build is pure Python: the suite itself ran them on the .py files")
    tests = [ROOT / "tests" / name for name in PURE_CORE_TESTS]
    assert all(t.exists() for t in tests)
    env = dict(os.environ, HTTPTAP_PURE="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        *map(str, tests)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1100)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
