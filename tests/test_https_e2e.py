"""End to end: real TLS clients under httptap, against test hosts with a test CA.

httptap trusts the test hosts' CA because ``SSL_CERT_FILE`` names it in httptap's own
environment; the command trusts httptap's run CA through the bundles and variables
httptap injects (``httptap.tls.trust``) and is given no other help. Every test compares the
exact lines httptap prints (``--stderr``, so they are apart from what the command writes
on stdout; clients are kept quiet so their own stderr lines do not interleave) and checks
that the client got the right bytes, so "the program notices nothing" is tested too.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shlex
import shutil
import ssl
import socket
import stat
import sys
import threading

import pytest
from cryptography import x509
from loopservers import LoopbackServer, pipe, read_head
from runner import UNPRIVILEGED_UID, run_httptap, unprivileged_skip_reason
from testhosts import GIT_FILES, WHEEL_INIT, TestHost

pytestmark = pytest.mark.root

TIMEOUT = 120.0
LINE_PREFIXES = ("---> ", "<--- ", "httptap:")


# --------------------------------------------------------------------------- helpers

def _httptap(test_host: TestHost, *args: str, timeout: float = TIMEOUT):
    """``httptap --stderr ARGS`` trusting the test CA upstream (SSL_CERT_FILE for httptap)."""
    return run_httptap("--stderr", *args, timeout=timeout,
                       env={"SSL_CERT_FILE": str(test_host.ca_file)})


# One of httptap's lines, wherever it starts: see _lines.
_OWN_LINE = re.compile("(?:" + "|".join(re.escape(p) for p in LINE_PREFIXES) + ")[^\n]*")


def _lines(r) -> list[str]:  # noqa: ANN001
    """httptap's own lines from stderr. The command's stderr shares the stream: httptap
    writes each line whole (one write, under PIPE_BUF) but it may land in the middle of a
    line the command is writing in pieces (curl: "c", then httptap's line, then "url:
    (35) ..."), so they are found anywhere, not only at line starts."""
    return _OWN_LINE.findall(r.stderr)


def _ok(r) -> None:  # noqa: ANN001
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


def _exchange(url: str, status: int, size: int, method: str = "GET") -> list[str]:
    return [f"---> {method} {url}", f"<--- {status} {url} ({size} bytes)"]


def _small(test_host: TestHost, port: int | None = None, host: int | str = 4) -> tuple[str, int]:
    return test_host.https_url("/files/small", host, port), test_host.files["small"][0]


def _direct_get(test_host: TestHost, path: str) -> bytes:
    """GET ``path`` from the test host's HTTPS port directly (no httptap), HTTP/1.1."""
    ctx = ssl.create_default_context(cafile=test_host.ca_file)
    conn = http.client.HTTPSConnection(test_host.ipv4, test_host.https_port, context=ctx,
                                       timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200, (path, resp.status)
        return resp.read()
    finally:
        conn.close()


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


def _need_h2(test_host: TestHost) -> None:
    if not test_host.has_h2:
        pytest.skip("the test host serves no HTTP/2 (the h2 package does not import)")


def _pem_blocks(text: str) -> list[x509.Certificate]:
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    return [x509.load_pem_x509_certificate(b.encode()) for b in blocks]


def _served_chain(test_host: TestHost, *args: str, name: str = "test.httptap.test"
                  ) -> list[x509.Certificate]:
    """The chain a command under httptap is served (openssl s_client -showcerts), verified
    against what httptap injected (-verify_return_error)."""
    _need("openssl")
    r = _httptap(test_host, *args, "--", "sh", "-c",
                 "openssl s_client -showcerts -verify_return_error "
                 f"-connect {test_host.ipv4}:443 -servername {name} </dev/null")
    _ok(r)
    return _pem_blocks(r.stdout)


# --------------------------------------------------------------------------- curl

def test_curl_http11(test_host):
    _need("curl")
    url, size = _small(test_host)
    r = _httptap(test_host, "--", "curl", "-sS", "--http1.1", "-o", "/dev/null",
                 "-w", "%{http_version} %{http_code} %{size_download}\n", url)
    _ok(r)
    assert r.stdout.split() == ["1.1", "200", str(size)]
    assert _lines(r) == _exchange(url, 200, size)


def test_a_server_that_closes_first_leaves_no_stray_lines(test_host):
    """``Connection: close``: the server closes first (close_notify, then FIN). Both reach
    the command in that order, and nothing but httptap's own lines reaches stderr (once,
    asyncio's TLS transport printed a warning about eof_received here)."""
    _need("curl")
    url, size = _small(test_host)
    r = _httptap(test_host, "--", "curl", "-sS", "--http1.1", "-H", "Connection: close",
                 "-o", "/dev/null", "-w", "%{http_code} %{size_download}\n", url)
    _ok(r)
    assert r.stdout.split() == ["200", str(size)]
    assert r.stderr.splitlines() == _exchange(url, 200, size)


def test_curl_http2_two_requests_one_connection(test_host):
    _need("curl")
    _need_h2(test_host)
    url1, size1 = _small(test_host)
    url2 = test_host.https_url("/bytes/5")
    r = _httptap(test_host, "--", "curl", "-sS", "--http2", "-o", "/dev/null", "-o", "/dev/null",
                 "-w", "%{http_version} %{http_code} %{size_download} %{num_connects}\n",
                 url1, url2)
    _ok(r)
    # The second transfer reuses the first one's connection (0 new connects).
    assert r.stdout.splitlines() == [f"2 200 {size1} 1", "2 200 5 0"]
    assert _lines(r) == _exchange(url1, 200, size1) + _exchange(url2, 200, 5)


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_16m_download_intact(test_host, version):
    _need("curl")
    if version == "--http2":
        _need_h2(test_host)
    size, digest = test_host.files["16m"]
    url = test_host.https_url("/files/16m")
    r = _httptap(test_host, "--", "sh", "-c", f"curl -sS {version} {url} | sha256sum")
    _ok(r)
    assert r.stdout.split()[0] == digest
    assert _lines(r) == _exchange(url, 200, size)


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_upload_intact(test_host, version):
    _need("curl")
    if version == "--http2":
        _need_h2(test_host)
    size = 20 << 20
    block = hashlib.sha256(b"https upload").digest() * 2048         # 64 KiB
    digest = hashlib.sha256(block * (size // len(block))).hexdigest()
    url = test_host.https_url("/upload")
    make = ("import hashlib, sys; b = hashlib.sha256(b'https upload').digest() * 2048\n"
            f"for _ in range({size // len(block)}): sys.stdout.buffer.write(b)")
    script = (f"{shlex.quote(sys.executable)} -c {shlex.quote(make)} | curl -sS {version} "
              f"--data-binary @- -H 'Content-Type: application/octet-stream' {url}")
    r = _httptap(test_host, "--", "sh", "-c", script)
    _ok(r)
    assert r.stdout.strip() == f'{{"size": {size}, "sha256": "{digest}"}}'
    reply = len(r.stdout.strip()) + 1
    assert _lines(r) == _exchange(url, 200, reply, "POST")


def test_curl_over_ipv6(test_host):
    _need("curl")
    if test_host.ipv6 is None:
        pytest.skip("IPv6 is disabled on this host")
    url, size = _small(test_host, host=6)
    r = _httptap(test_host, "--", "curl", "-sS", "-g", "-o", "/dev/null", "-w", "%{http_code}\n",
                 url)
    _ok(r)
    assert r.stdout.split() == ["200"]
    assert _lines(r) == _exchange(url, 200, size)


def test_curl_sni_names_the_url_and_the_certificate(test_host):
    """curl --resolve sends SNI test.httptap.test: the URL shows the name."""
    _need("curl")
    url, size = _small(test_host, host="test.httptap.test")
    r = _httptap(test_host, "--", "curl", "-sS", "--resolve",
                 f"test.httptap.test:443:{test_host.ipv4}", "-o", "/dev/null",
                 "-w", "%{http_code}\n", url)
    _ok(r)
    assert r.stdout.split() == ["200"]
    assert _lines(r) == _exchange(url, 200, size)


# --------------------------------------------------------------------------- other clients

def test_wget(test_host):
    _need("wget")
    url, size = _small(test_host)
    r = _httptap(test_host, "--", "sh", "-c", f"wget -q -O - {url} | sha256sum")
    _ok(r)
    assert r.stdout.split()[0] == test_host.files["small"][1]
    assert _lines(r) == _exchange(url, 200, size)


URLLIB = """
import hashlib, sys, urllib.request
body = urllib.request.urlopen(sys.argv[1], timeout=30).read()
print(len(body), hashlib.sha256(body).hexdigest())
"""

REQUESTS = """
import hashlib, sys, requests
r = requests.get(sys.argv[1], timeout=30)
print(r.status_code, len(r.content), hashlib.sha256(r.content).hexdigest())
"""


def test_python_urllib(test_host):
    url, size = _small(test_host)
    r = _httptap(test_host, "--", sys.executable, "-c", URLLIB, url)
    _ok(r)
    assert r.stdout.split() == [str(size), test_host.files["small"][1]]
    assert _lines(r) == _exchange(url, 200, size)


def test_python_requests(test_host):
    pytest.importorskip("requests")
    url, size = _small(test_host)
    r = _httptap(test_host, "--", sys.executable, "-c", REQUESTS, url)
    _ok(r)
    assert r.stdout.split() == ["200", str(size), test_host.files["small"][1]]
    assert _lines(r) == _exchange(url, 200, size)


NODE_FETCH = """
if (typeof fetch !== "function") { console.log("NOFETCH"); process.exit(0); }
fetch(process.argv[1]).then(r => r.arrayBuffer().then(b => console.log(r.status, b.byteLength)))
  .catch(e => { console.error(e); process.exit(1); });
"""

NODE_HTTPS = """
require("https").get(process.argv[1], r => {
  let n = 0;
  r.on("data", c => { n += c.length; });
  r.on("end", () => console.log(r.statusCode, n));
}).on("error", e => { console.error(e); process.exit(1); });
"""


@pytest.mark.parametrize("script", [NODE_FETCH, NODE_HTTPS], ids=["fetch", "https-module"])
def test_node(test_host, script):
    node = _need("node")
    url, size = _small(test_host)
    r = _httptap(test_host, "--", node, "-e", script, url)
    _ok(r)
    if r.stdout.strip() == "NOFETCH":
        pytest.skip("this node has no global fetch (node >= 18 has)")
    assert r.stdout.split() == ["200", str(size)]
    assert _lines(r) == _exchange(url, 200, size)


def test_openssl_s_client(test_host):
    """A raw TLS client: the request line appears, the response is read, and the certificate
    it gets (verified: -verify_return_error) is minted for the SNI name."""
    _need("openssl")
    request = (b"GET /status/201 HTTP/1.1\r\nHost: test.httptap.test\r\n"
               b"Connection: close\r\n\r\n")
    r = _httptap(test_host, "--", "sh", "-c",
                 f"printf '{request.decode().encode('unicode_escape').decode()}' | "
                 f"openssl s_client -quiet -verify_return_error -connect {test_host.ipv4}:443 "
                 "-servername test.httptap.test; true")
    # (openssl then says "unexpected eof": the test host closes without close_notify,
    # exactly as it does without httptap.)
    _ok(r)
    body = '{"status": 201}\n'
    assert r.stdout.startswith("HTTP/1.1 201 ")
    assert r.stdout.endswith("\n\n" + body)              # (text mode: CRLF read as LF)
    assert "CN = test.httptap.test" in r.stderr           # the leaf openssl verified
    assert _lines(r) == _exchange("https://test.httptap.test/status/201", 201, len(body))


# --------------------------------------------------------------------------- git, pip

def test_git_clone(test_host, tmp_path):
    _need("git")
    dest = tmp_path / "demo"
    url = test_host.git_url()
    r = _httptap(test_host, "--", "git", "-c", "protocol.version=2", "clone", "-q", url,
                 str(dest))
    _ok(r)
    for name, text in GIT_FILES.items():
        assert (dest / name).read_text() == text
    lines = _lines(r)
    refs = f"{url}/info/refs?service=git-upload-pack"
    pack = f"{url}/git-upload-pack"
    assert lines[0] == f"---> GET {refs}"
    assert re.fullmatch(rf"<--- 200 {re.escape(refs)} \(\d+ bytes\)", lines[1])
    assert len(lines) >= 4 and len(lines) % 2 == 0, lines
    for request, response in zip(lines[2::2], lines[3::2]):
        assert request == f"---> POST {pack}"
        assert re.fullmatch(rf"<--- 200 {re.escape(pack)} \(\d+ bytes\)", response)


def test_pip_install(test_host, tmp_path):
    target = tmp_path / "site"
    index = test_host.pip_index_url
    project = test_host.wheel_name.split("-")[0].replace("_", "-")
    r = _httptap(test_host, "--", sys.executable, "-m", "pip", "install", "--isolated",
                 "--no-cache-dir", "--disable-pip-version-check", "--no-deps", "-q",
                 "--index-url", index, "--target", str(target), project)
    _ok(r)
    assert (target / "demo_pkg" / "__init__.py").read_text() == WHEEL_INIT
    page = f"{index}{project}/"
    wheel = test_host.https_url(f"/packages/{test_host.wheel_name}")
    wheel_size = os.path.getsize(os.path.join(test_host.pip_dir, test_host.wheel_name))
    page_size = len(_direct_get(test_host, f"/simple/{project}/"))
    assert _lines(r) == _exchange(page, 200, page_size) + _exchange(wheel, 200, wheel_size)


# --------------------------------------------------------------------------- upstream failures

@pytest.mark.parametrize("case", ["wrong-name", "expired"])
def test_bad_upstream_certificate_fails_the_handshake(test_host, case):
    _need("curl")
    port = test_host.wrong_name_port if case == "wrong-name" else test_host.expired_port
    url, _ = _small(test_host, port)
    r = _httptap(test_host, "--", "curl", "-sS", "-o", "/dev/null", url)
    assert r.returncode == 35, r.stderr                   # CURLE_SSL_CONNECT_ERROR
    ip = test_host.ipv4
    errors = [line for line in _lines(r) if line.startswith("httptap:")]
    assert len(errors) == 1, r.stderr
    assert not [line for line in _lines(r) if line.startswith(("---> ", "<--- "))], r.stderr
    prefix = f"httptap: TLS to {ip} ({ip}:{port}) failed: "
    assert errors[0].startswith(prefix), errors
    why = errors[0][len(prefix):]
    if case == "wrong-name":
        assert "mismatch" in why or "not valid" in why, why
    else:
        assert "expired" in why, why


def test_expired_with_sni_names_the_host(test_host):
    _need("curl")
    ip, port = test_host.ipv4, test_host.expired_port
    r = _httptap(test_host, "--", "curl", "-sS", "-o", "/dev/null", "--resolve",
                 f"test.httptap.test:{port}:{ip}", f"https://test.httptap.test:{port}/")
    assert r.returncode == 35, r.stderr
    assert [line for line in _lines(r) if line.startswith("httptap:")] == [
        f"httptap: TLS to test.httptap.test ({ip}:{port}) failed: certificate has expired"
    ], r.stderr


def test_python_client_sees_a_handshake_failure(test_host):
    url, _ = _small(test_host, test_host.expired_port)
    script = ("import ssl, sys, urllib.request\n"
              "try:\n    urllib.request.urlopen(sys.argv[1], timeout=30)\n"
              "except urllib.error.URLError as e:\n"
              "    print(type(e.reason).__name__, isinstance(e.reason, ssl.SSLError))\n")
    r = _httptap(test_host, "--", sys.executable, "-c", script, url)
    _ok(r)
    assert r.stdout.split() == ["SSLError", "True"]


def test_insecure_lets_the_expired_certificate_through(test_host):
    _need("curl")
    for port in (test_host.expired_port, test_host.wrong_name_port):
        url, size = _small(test_host, port)
        r = _httptap(test_host, "--insecure", "--", "curl", "-sS", "-o", "/dev/null",
                     "-w", "%{http_code}\n", url)
        _ok(r)
        assert r.stdout.split() == ["200"]
        assert _lines(r) == _exchange(url, 200, size)


def test_unmintable_sni_fails_the_handshake_not_hangs(test_host):
    """With --insecure the upstream accepts any SNI; one no certificate can hold
    (a '/') must still end the command's handshake with an alert and an error line."""
    _need("openssl")
    ip = test_host.ipv4
    r = _httptap(test_host, "--insecure", "--", "sh", "-c",
                 f"timeout 20 openssl s_client -connect {ip}:443 -servername a/b "
                 "</dev/null >/dev/null; echo $?", timeout=60)
    _ok(r)
    assert r.stdout.split() == ["1"], r.stderr              # failed, not killed by timeout
    assert [line for line in _lines(r) if line.startswith("httptap:")] == [
        f"httptap: TLS to a/b ({ip}:443) failed: cannot mint a certificate for 'a/b': "
        "not a valid host name"], r.stderr


# --------------------------------------------------------------------------- ports

@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_tls_on_a_port_not_listed_is_decoded(test_host, version):
    _need("curl")
    if version == "--http2":
        _need_h2(test_host)
    url, size = _small(test_host, test_host.tls_other_port)
    r = _httptap(test_host, "--", "curl", "-sS", version, "-o", "/dev/null",
                 "-w", "%{http_code}\n", url)
    _ok(r)
    assert r.stdout.split() == ["200"]
    assert _lines(r) == _exchange(url, 200, size)


@pytest.mark.parametrize("ports", [["--https", "8444"], ["--https", "443", "8444"],
                                   ["--https", "443,8444"], ["--https", "443", "--https", "8444"]],
                         ids=["one", "list", "comma", "repeated"])
def test_https_option_forms(test_host, ports):
    _need("curl")
    url, size = _small(test_host, test_host.tls_other_port)
    url443, _ = _small(test_host)
    r = _httptap(test_host, *ports, "--", "curl", "-sS", "--http1.1", "-o", "/dev/null",
                 "-o", "/dev/null", "-w", "%{http_code}\n", url, url443)
    _ok(r)
    assert r.stdout.split() == ["200", "200"]
    assert _lines(r) == _exchange(url, 200, size) + _exchange(url443, 200, size)


# --------------------------------------------------------------------------- --keylog, --ca

_KEYLOG_LINE = re.compile(r"([A-Z_0-9]+) ([0-9a-f]{64}) ([0-9a-f]+)")


def _keylog(path) -> list[tuple[str, str, str]]:  # noqa: ANN001
    entries = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        m = _KEYLOG_LINE.fullmatch(line)
        assert m, f"not an NSS key-log line: {line!r}"
        entries.append(m.groups())
    return entries


@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_keylog_has_both_sides(test_host, tmp_path, tls):
    """Two connections: four client randoms (the command's and ours upstream, each), and
    the command's secrets are exactly those curl itself logs (SSLKEYLOGFILE)."""
    _need("curl")
    ours, theirs = tmp_path / "httptap.keys", tmp_path / "curl.keys"
    url, size = _small(test_host)
    limit = "--tls-max 1.2" if tls == "1.2" else "--tlsv1.3"
    r = _httptap(test_host, "--keylog", str(ours), "--", "sh", "-c",
                 f"for i in 1 2; do SSLKEYLOGFILE={theirs} curl -sS --http1.1 {limit} "
                 f"-o /dev/null {url}; done")
    _ok(r)
    assert _lines(r) == _exchange(url, 200, size) * 2
    entries = _keylog(ours)
    labels = {label for label, _, _ in entries}
    if tls == "1.2":
        assert "CLIENT_RANDOM" in labels                    # the command's side (TLS 1.2)
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in labels       # upstream: TLS 1.3
    randoms = {random for _, random, _ in entries}
    assert len(randoms) >= 4, entries
    if theirs.exists():                                     # curl built with key logging
        command_side = set(_keylog(theirs))
        assert len({random for _, random, _ in command_side}) == 2
        assert command_side <= set(entries)


def _leaf_of(chain: list[x509.Certificate]) -> x509.Certificate:
    # The served chain is the leaf alone: the CA is a root, which the command trusts
    # already (RFC 8446 4.4.2), so which CA signed it is read from the leaf.
    assert len(chain) == 1, "a root CA is left out of the served chain"
    return chain[0]


def _issuer_key_id(leaf: x509.Certificate) -> bytes:
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    return aki.key_identifier


def test_ca_dir_is_created_once_and_reused(test_host, tmp_path):
    ca_dir = tmp_path / "ca"
    first = _leaf_of(_served_chain(test_host, "--ca", str(ca_dir)))
    cert_file, key_file = ca_dir / "ca.pem", ca_dir / "ca-key.pem"
    assert cert_file.exists() and key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    saved = x509.load_pem_x509_certificate(cert_file.read_bytes())
    first.verify_directly_issued_by(saved)
    before = (cert_file.read_bytes(), key_file.read_bytes(), cert_file.stat().st_mtime_ns)
    second = _leaf_of(_served_chain(test_host, "--ca", str(ca_dir)))
    second.verify_directly_issued_by(saved)
    assert (cert_file.read_bytes(), key_file.read_bytes(), cert_file.stat().st_mtime_ns) == before
    assert sorted(os.listdir(ca_dir)) == ["ca-key.pem", "ca.pem"]


def test_without_ca_dir_every_run_has_a_new_ca(test_host):
    one = _leaf_of(_served_chain(test_host))
    two = _leaf_of(_served_chain(test_host))
    assert _issuer_key_id(one) != _issuer_key_id(two)


def test_the_leaf_is_minted_for_the_sni_name(test_host):
    chain = _served_chain(test_host, name="www.httptap.test")
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "www.httptap.test" in san.get_values_for_type(x509.DNSName)


# --------------------------------------------------------------------------- more ways to run

CONCURRENT = """
import hashlib, sys, threading, urllib.request
results = []
def one(i):
    body = urllib.request.urlopen(f"{sys.argv[1]}/bytes/{1000 + i}", timeout=60).read()
    results.append(len(body) == 1000 + i)
threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
for t in threads: t.start()
for t in threads: t.join()
print(len(results), all(results))
"""


def test_twenty_concurrent_https_connections(test_host):
    base = test_host.https_url("").rstrip("/")
    r = _httptap(test_host, "--", sys.executable, "-c", CONCURRENT, base)
    _ok(r)
    assert r.stdout.split() == ["20", "True"]
    expected = [line for i in range(20)
                for line in _exchange(f"{base}/bytes/{1000 + i}", 200, 1000 + i)]
    assert sorted(_lines(r)) == sorted(expected)


def test_no_overlay_still_trusted_through_the_variables(test_host):
    """--no-overlay skips the bundle mounts, not the variables (curl reads CURL_CA_BUNDLE)."""
    _need("curl")
    url, size = _small(test_host)
    r = _httptap(test_host, "--no-overlay", "--", "curl", "-sS", "-o", "/dev/null",
                 "-w", "%{http_code}\n", url)
    _ok(r)
    assert r.stdout.split() == ["200"]
    assert _lines(r) == _exchange(url, 200, size)


def test_unprivileged_user(test_host):
    _need("curl")
    reason = unprivileged_skip_reason()
    if reason:
        pytest.skip(reason)
    url, size = _small(test_host)
    r = run_httptap("--stderr", "--", "curl", "-sS", "--http2", "-o", "/dev/null",
                    "-w", "%{http_code}\n", url, timeout=TIMEOUT, uid=UNPRIVILEGED_UID,
                    env={"SSL_CERT_FILE": str(test_host.ca_file)})
    _ok(r)
    assert r.stdout.split() == ["200"]
    assert _lines(r) == _exchange(url, 200, size)


CLOSE_NOTIFY = """
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.set_alpn_protocols(["http/1.1"])
raw = socket.create_connection((sys.argv[1], 443), timeout=10)
s = ctx.wrap_socket(raw, server_hostname=sys.argv[1])
s.sendall(b"GET /bytes/5 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")  # keep-alive: the server stays
reply = b""
while not reply.endswith(b"\\r\\n\\r\\n" + bytes(5)):
    reply += s.recv(4096)
s.settimeout(10)              # far below the server's keep-alive: a wait for it fails
plain = s.unwrap()            # our close_notify, then waits for the other side's
print(plain.recv(10) == b"")
"""


def test_close_notify_from_the_command_closes_the_session(test_host):
    """A client that ends its TLS session (close_notify) and waits for the server's is
    answered at once, though the upstream would keep the connection alive."""
    r = _httptap(test_host, "--", sys.executable, "-c", CLOSE_NOTIFY, test_host.ipv4)
    _ok(r)
    assert r.stdout.split() == ["True"]


# --------------------------------------------------------------------------- a client that rejects our CA

REJECTING_CLIENT = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # an empty trust store: trusts no CA at all
failures = 0
for _ in range(2):
    with socket.create_connection((sys.argv[1], 443), timeout=30) as sock:
        try:
            ctx.wrap_socket(sock, server_hostname=sys.argv[1])
        except ssl.SSLCertVerificationError:
            failures += 1
print(failures)
"""


def test_a_client_that_rejects_httptaps_ca_gets_one_hint_line(test_host):
    r = _httptap(test_host, "--", sys.executable, "-c", REJECTING_CLIENT, test_host.ipv4)
    _ok(r)
    assert r.stdout.strip() == "2"
    ip = test_host.ipv4
    hint = (f"httptap: the client rejected httptap's certificate for {ip} (unknown CA): it does "
            "not use the system trust store; see \"Trusting httptap's CA\" in the README")
    # Once for the name, though both connections were refused (the command writes nothing
    # on stderr, so the lines are whole).
    assert [line for line in r.stderr.splitlines() if "rejected" in line] == [hint]


# --------------------------------------------------------------------------- CONNECT tunnels

class _ConnectProxy(LoopbackServer):
    """A minimal CONNECT proxy on the host's loopback (reached from inside as
    host.httptap.local), relaying each tunnel to the address the client named."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        super().__init__()

    def serve(self, client: socket.socket) -> None:
        head = read_head(client, 8192)
        target = head.split(b" ")[1].decode() if head.startswith(b"CONNECT ") else ""
        self.targets.append(target)
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        except (OSError, ValueError):
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
            back.start()
            pipe(client, upstream)
            back.join(timeout=30)


REQUESTS_THROUGH_PROXY = """
import sys, requests
r = requests.get(sys.argv[1], proxies={"https": sys.argv[2]}, timeout=30)
print(r.status_code, len(r.content))
"""


@pytest.mark.parametrize("client", ["curl", "requests"])
def test_https_through_a_connect_proxy_is_intercepted(test_host, client):
    proxy = _ConnectProxy()
    try:
        url, size = _small(test_host)
        proxy_url = f"http://host.httptap.local:{proxy.port}"
        if client == "curl":
            _need("curl")
            argv = ["curl", "-sS", "--http1.1", "-x", proxy_url, "-o", "/dev/null",
                    "-w", "%{http_code} %{size_download}\n", url]
        else:
            argv = [sys.executable, "-c", REQUESTS_THROUGH_PROXY, url, proxy_url]
        r = _httptap(test_host, "--", *argv)
    finally:
        proxy.close()
    _ok(r)
    assert r.stdout.split() == ["200", str(size)]
    target = f"{test_host.ipv4}:{test_host.https_port}"
    assert proxy.targets == [target]
    assert _lines(r) == [f"---> CONNECT {target}", f"<--- 200 {target} (0 bytes)",
                         *_exchange(url, 200, size)]


# --------------------------------------------------------------------------- --no-intercept

def test_no_intercept_relays_tls_untouched_and_records_the_name(test_host, tmp_path):
    _need("curl")
    import json

    name, port = "wrong.httptap.test", test_host.wrong_name_port  # its certificate's name
    url = f"https://{name}:{port}/files/small"
    nd = tmp_path / "out.ndjson"
    r = _httptap(test_host, "--no-intercept", "*.httptap.test", "--sink", f"ndjson:{nd}", "--",
                 "curl", "-sS", "--cacert", str(test_host.ca_file), "--resolve",
                 f"{name}:{port}:{test_host.ipv4}", "-o", "/dev/null", "-w", "%{http_code}", url)
    _ok(r)  # curl verified the test host's own certificate: nothing was intercepted
    assert r.stdout == "200"
    records = [json.loads(line) for line in nd.read_text().splitlines()]
    assert [(x["type"], x.get("tls_sni"), x["server"]) for x in records] == [
        ("tcp", name, f"{test_host.ipv4}:{port}")]


# --------------------------------------------------------------------------- Java

JAVA_FETCH = """
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        HttpResponse<byte[]> r = client.send(HttpRequest.newBuilder(URI.create(args[0])).build(),
                                             HttpResponse.BodyHandlers.ofByteArray());
        System.out.println(r.statusCode() + " " + r.body().length);
    }
}
"""


def test_java_trusts_httptaps_ca_with_one_note(test_host, tmp_path):
    java = _need("java")
    source = tmp_path / "Fetch.java"
    source.write_text(JAVA_FETCH)
    url, size = _small(test_host)
    # Two runs at once start JVMs with the same small pid (each in a PID namespace of its
    # own), whose /tmp/hsperfdata_root/<pid> files would collide ("Cannot use file ...
    # because it is locked", on stdout): httptap's Java options turn that file off.
    r = _httptap(test_host, "--", java, str(source), url)
    _ok(r)
    assert r.stdout.split() == ["200", str(size)]
    assert _lines(r) == _exchange(url, 200, size)
    notes = [line for line in r.stderr.splitlines() if "Picked up" in line]
    assert len(notes) == 1, r.stderr
