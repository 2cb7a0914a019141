"""The server side of perf/bench.py: the test host, its certificates and nginx.

``start_server`` creates the test host (``tests/testhosts.py``: a network namespace
joined by a veth pair) with the ``bulk`` and ``small`` files and, when nginx is
installed, starts it inside that namespace on ports of our own; otherwise the test
host's Python servers serve. It returns the URLs and the CA that every setup and
workload uses. Everything started here is registered with ``procs.on_cleanup``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import kill_tree, on_cleanup, run

NGINX = "/usr/sbin/nginx"
# ports of our own: the test host's servers use 7, 53, 80, 443, 8080, 8443, 8444, 9443
NGINX_HTTP_PORT = 18080
NGINX_HTTPS_PORT = 18443
SMALL_SIZE = 1024
MiB = 1 << 20

# --------------------------------------------------------------------------- certificates

def make_certs(directory: str, ip: str) -> tuple[str, str, str]:
    """A test CA and a server certificate for ``ip``: (ca.pem, server.crt, server.key)."""
    ca_path = os.path.join(directory, "test-ca.pem")
    try:
        from testca import TestCA  # tests/testca.py, when present
        ca = TestCA("httptap bench CA")
        ca.write_ca(ca_path)
        crt, key = ca.issue_files([ip, "testhost.httptap.test"], directory, "server")
        return ca_path, crt, key
    except ImportError:
        pass
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "httptap bench CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                            False, False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)),
                 x509.DNSName("testhost.httptap.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt, keyp = os.path.join(directory, "server.crt"), os.path.join(directory, "server.key")
    Path(ca_path).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    Path(crt).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(keyp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca_path, crt, keyp


# --------------------------------------------------------------------------- servers

def wait_accepting(addr: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
                   ns: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    for _ in range(1000):
        if time.monotonic() > deadline:
            break
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        try:
            with socket.create_connection((addr, port), timeout=1.0):
                return
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"{addr}:{port} does not accept connections after {timeout:.0f}s: {last!r}")


def start_nginx(host: Any, workdir: str, crt: str, key: str) -> subprocess.Popen:
    d = os.path.join(workdir, "nginx")
    os.makedirs(d)
    conf = os.path.join(d, "nginx.conf")
    Path(conf).write_text(f"""
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench:1m;
    server {{
        listen {NGINX_HTTP_PORT};
        listen {NGINX_HTTPS_PORT} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        root {host.files_dir};
    }}
}}
""")
    log = open(os.path.join(d, "stderr.log"), "wb")  # noqa: SIM115 - closed in stop()
    proc = subprocess.Popen(["ip", "netns", "exec", host.netns, NGINX, "-c", conf,
                             "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log, start_new_session=True, close_fds=True)

    def stop_nginx() -> None:
        kill_tree(proc)
        log.close()
    on_cleanup(stop_nginx)
    try:
        wait_accepting(host.ipv4, NGINX_HTTP_PORT, 10, proc)
        wait_accepting(host.ipv4, NGINX_HTTPS_PORT, 10, proc)
    except RuntimeError as exc:
        err = Path(d, "stderr.log").read_text(errors="replace")[-800:] + \
            (Path(d, "error.log").read_text(errors="replace")[-800:]
             if os.path.exists(os.path.join(d, "error.log")) else "")
        raise RuntimeError(f"nginx: {exc}; {err}") from exc
    return proc



# --------------------------------------------------------------------------- bring-up

@dataclass
class Server:
    """What the setups and workloads need to know about the server."""
    host: Any               # the TestHost
    description: str        # for the report: "nginx (1.x), 1 worker" or the Python servers
    http_url: str           # base URL, plain
    https_url: str | None   # base URL, TLS (nginx, or the test host's TLS server if any)
    ca: str | None          # the CA that signed the server's certificate
    pid: int | None = None  # the server's process (nginx's master), for --pin

    @property
    def http_port(self) -> int:
        return NGINX_HTTP_PORT if self.https_url else self.host.http_port

    @property
    def https_port(self) -> int | None:
        return int(self.https_url.rsplit(":", 1)[1]) if self.https_url else None


def start_server(workdir: str, bulk_size: int) -> Server:
    """The test host serving ``bulk`` (``bulk_size`` bytes) and ``small``, behind nginx if
    it is installed."""
    from testhosts import TestHost  # tests/ is on sys.path (bench.py puts it there)
    print(f"bench: creating a test host with a {bulk_size // MiB} MiB file ...", flush=True)
    host = TestHost({"bulk": bulk_size, "small": SMALL_SIZE}, ipv6=False)
    on_cleanup(host.close)
    ca = crt = key = None
    pid = host._proc.pid if getattr(host, "_proc", None) is not None else None
    server = "python (tests/servers.py)"
    https_url = None
    http_url = host.url("").rstrip("/")
    if os.path.exists(NGINX):
        ca, crt, key = make_certs(workdir, host.ipv4)
        pid = start_nginx(host, workdir, crt, key).pid
        ver = run([NGINX, "-v"], timeout=10).stderr.strip()
        server = f"nginx ({ver.split('/')[-1]}), 1 worker"
        http_url = f"http://{host.ipv4}:{NGINX_HTTP_PORT}"
        https_url = f"https://{host.ipv4}:{NGINX_HTTPS_PORT}"
    else:
        if getattr(host, "https_port", None) and getattr(host, "ca_file", None):
            ca = host.ca_file
            https_url = f"https://{host.ipv4}:{host.https_port}"
        print(f"bench: {NGINX} not found: using the test host's Python servers, which are "
              "slow for small requests. Install nginx for real figures: "
              "apt-get install nginx-light (or nginx)", file=sys.stderr)
    return Server(host, server, http_url, https_url, ca, pid)
