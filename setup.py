"""Build: the pure cores listed in ``httptap/compiled.py`` are compiled with mypyc when it
can (mypy is a build requirement, a C compiler and Python's headers must be there), and
installed as their plain .py otherwise. Every way of failing to compile ends in a working,
pure-Python install: the same code, only slower. ``HTTPTAP_PURE=1`` at install skips
compiling. Everything else about the package is in ``pyproject.toml``.

The compiling happens in ``build_ext`` (not when this file is loaded): pip loads it for
metadata too, and mypyc's type analysis takes seconds. An in-place (editable) build also
writes ``httptap/_build.stamp`` (what was compiled, from which sources: see
``httptap/compiled.py``) and removes any compiled file that the build did not produce,
so that no stale .so is left beside a .py.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "httptap"


def _modules() -> tuple[str, ...]:
    namespace: dict[str, object] = {}
    exec((PACKAGE / "compiled.py").read_text(encoding="utf-8"), namespace)
    modules = namespace["MODULES"]
    assert isinstance(modules, tuple)
    return modules


def _source(module: str) -> str:
    return module.replace(".", "/") + ".py"


def _say(text: str) -> None:
    print(f"httptap build: {text}", file=sys.stderr, flush=True)


#: Commands that only describe the package: they build nothing.
METADATA_ONLY = {"egg_info", "dist_info", "sdist"}


class BinaryDistribution(Distribution):
    """Always run ``build_ext`` (it decides what to compile), and tag the wheel per platform."""

    def has_ext_modules(self) -> bool:
        return True


class BuildCores(build_ext):
    """mypyc's extensions when they can be built; none, and a pure install, when not."""

    # Once per build (pip's backend may make more than one build_ext command).
    _generated: list[object] | None = None     # mypycify's extensions
    _sources_as_compiled: list[str] = []       # the stamp's lines
    pure_reason = ""

    def _extensions(self) -> list[object]:
        cls = type(self)
        if cls._generated is not None:
            return cls._generated
        cls._generated = []
        if os.environ.get("HTTPTAP_PURE", "") not in ("", "0"):
            cls.pure_reason = "HTTPTAP_PURE was set at install"
            return cls._generated
        try:
            from mypyc.build import mypycify
        except ImportError:
            cls.pure_reason = "mypyc was not available at install"
            return cls._generated
        cls._sources_as_compiled = self._sources_now()
        try:
            cls._generated = list(mypycify(
                # The same analysis wherever it builds: no config file (mypy --strict is
                # the suite's job, tests/test_types.py) and no site-packages (pip's build
                # environment has none of the dependencies; their types are Any here).
                ["--config-file=", "--no-site-packages", "--ignore-missing-imports",
                 "--follow-imports=silent", "--python-version", "3.11",
                 *[_source(m) for m in _modules()]],
                group_name="httptap.cores", opt_level="3"))
        except (Exception, SystemExit) as e:  # mypy's errors end in SystemExit
            cls.pure_reason = f"mypyc failed at install ({type(e).__name__})"
            _say(f"mypyc failed ({e!r}); installing the pure-Python modules")
        return cls._generated

    def _sources_now(self) -> list[str]:
        lines = []
        for module in _modules():
            st = (ROOT / _source(module)).stat()
            lines.append(f"{_source(module)} {st.st_mtime_ns} {st.st_size}")
        return lines

    def finalize_options(self) -> None:
        # pip's metadata steps (egg_info, dist_info) finalize this command too, for its
        # source list: no mypyc there, its analysis takes seconds.
        if not set(self.distribution.commands) <= METADATA_ONLY:
            self.distribution.ext_modules = self._extensions()  # type: ignore[assignment]
        super().finalize_options()

    def run(self) -> None:
        inplace = self.inplace      # (setuptools clears it while building)
        try:
            if self.extensions:
                super().run()
        except Exception as e:   # no compiler, no Python.h, a compiler error: install pure
            type(self).pure_reason = f"compiling failed at install ({type(e).__name__})"
            _say(f"compiling failed ({e}); installing the pure-Python modules")
            traceback.print_exc(file=sys.stderr)
            self._remove_outputs()
            self.extensions = []
        if not self.extensions and not type(self).pure_reason:
            type(self).pure_reason = "nothing was compiled"
        if inplace:
            self._write_stamp()

    def get_outputs(self) -> list[str]:
        return super().get_outputs() if self.extensions else []

    def _remove_outputs(self) -> None:
        """A failed build leaves no half of itself in the wheel or beside the sources."""
        try:
            for path in super().get_outputs():
                Path(path).unlink(missing_ok=True)
        except Exception:
            traceback.print_exc(file=sys.stderr)

    def _write_stamp(self) -> None:
        """Record the build beside the sources, and remove compiled files it did not make."""
        made = set()
        if self.extensions:
            for ext in self.extensions:
                made.add(ROOT / self.get_ext_filename(self.get_ext_fullname(ext.name)))
        for path in PACKAGE.rglob("*.so"):
            if path not in made:
                path.unlink()
        if self.extensions:
            lines = ["compiled", *self._sources_as_compiled]
        else:
            lines = [f"pure: {type(self).pure_reason}"]
        (PACKAGE / "_build.stamp").write_text("\n".join(lines) + "\n", encoding="utf-8")


setup(distclass=BinaryDistribution, cmdclass={"build_ext": BuildCores})
