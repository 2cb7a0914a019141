"""The test hosts' site: files, ``git http-backend`` (smart HTTP, CGI) over the bare
repositories of ``--git-root``, and a PEP 503 simple index of the wheels in ``--pip-dir``.

Protocol-neutral: the HTTP/1.1 handler (``http1``) and the HTTP/2 session (``http2``)
both call ``Site.git_cgi`` and ``Site.pip_page``.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import urllib.parse

from hostservers.content import _FILE_NAME, CGI_TIMEOUT

class Site:
    """What the HTTP app serves: files, git repositories, wheels (directories may be None)."""

    def __init__(self, files_dir: str, git_root: str | None = None,
                 pip_dir: str | None = None) -> None:
        self.files_dir = os.path.realpath(files_dir)
        self.git_root = os.path.realpath(git_root) if git_root else None
        self.pip_dir = os.path.realpath(pip_dir) if pip_dir else None
        # project (PEP 503 normalized) -> [(wheel file name, sha256 hex)]
        self.wheels: dict[str, list[tuple[str, str]]] = {}
        if self.pip_dir:
            for name in sorted(os.listdir(self.pip_dir)):
                if not name.endswith(".whl") or not _FILE_NAME.match(name):
                    continue
                with open(os.path.join(self.pip_dir, name), "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                project = re.sub(r"[-_.]+", "-", name.split("-", 1)[0]).lower()
                self.wheels.setdefault(project, []).append((name, digest))

    def wheel_path(self, name: str) -> str | None:
        """The path of wheel ``name`` if the index holds it."""
        if self.pip_dir and any(name == w for ws in self.wheels.values() for w, _ in ws):
            return os.path.join(self.pip_dir, name)
        return None

    def pip_page(self, parts: list[str]) -> bytes | None:
        """The PEP 503 page of path ``/simple/...`` split at "/", or None (not found)."""
        rest = [p for p in parts[2:] if p]
        if not rest:
            links = [f'<a href="{p}/">{p}</a><br>' for p in sorted(self.wheels)]
            title = "Simple index"
        elif len(rest) == 1 and re.sub(r"[-_.]+", "-", rest[0]).lower() in self.wheels:
            project = re.sub(r"[-_.]+", "-", rest[0]).lower()
            links = [f'<a href="/packages/{html.escape(w)}#sha256={d}">{html.escape(w)}</a><br>'
                     for w, d in self.wheels[project]]
            title = f"Links for {project}"
        else:
            return None
        return (f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" "
                f"content=\"1.0\"><title>{title}</title></head>\n<body><h1>{title}</h1>\n"
                + "\n".join(links) + "\n</body></html>\n").encode()

    def git_cgi(self, method: str, target: str, headers: list[tuple[str, str]],
                body: bytes | None, remote: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run ``git http-backend`` for ``target`` (``/git/...``): status, headers, body."""
        def error(code: int, obj: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
            return code, [("Content-Type", "application/json")], json.dumps(obj).encode()

        path, _, query = target.partition("?")
        path_info = urllib.parse.unquote(path[len("/git"):])
        if not self.git_root or ".." in path_info.split("/") or not path_info.startswith("/"):
            return error(404, {"error": "not found", "path": path})
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.git_root,
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": self.git_root, "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": method, "PATH_INFO": path_info, "QUERY_STRING": query,
            "REMOTE_ADDR": remote, "CONTENT_TYPE": "",
        }
        if body is not None:
            env["CONTENT_LENGTH"] = str(len(body))
        for k, v in headers:
            key = k.lower()
            if key == "content-type":
                env["CONTENT_TYPE"] = v
            elif key not in ("content-length", "transfer-encoding") and not key.startswith(":"):
                env["HTTP_" + k.upper().replace("-", "_")] = v
        try:
            proc = subprocess.run(["git", "http-backend"], input=body or b"", env=env,
                                  capture_output=True, timeout=CGI_TIMEOUT, cwd=self.git_root)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return error(500, {"error": f"git http-backend: {exc}"})
        m = re.search(rb"\r?\n\r?\n", proc.stdout)
        if m is None:
            return error(502, {"error": "git http-backend gave no headers",
                               "stderr": proc.stderr[-1000:].decode(errors="replace")})
        status, out = 200, []
        for line in proc.stdout[:m.start()].decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name.strip() and name.strip().lower() != "content-length":
                out.append((name.strip(), value.strip()))      # (the caller sets the length)
        return status, out, proc.stdout[m.end():]
