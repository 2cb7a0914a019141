"""Tests for httptap.tls.trust: the variables, the bundle, the hashed directory, the Java store.

The subject hash is checked against ``openssl x509 -hash`` and against the host's own
hashed directory; the bundle and the hashed directory are checked by letting Python's
ssl verify a certificate minted by httptap.tls.ca in an in-memory handshake.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from httptap.tls import trust
from httptap.tls.ca import CertificateAuthority

# SPEC.md, "Inside the namespace": the variables the command gets.
SPEC_VARIABLES = {
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS", "DENO_CERT", "AWS_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT",
    "CARGO_HTTP_CAINFO", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "_JAVA_OPTIONS",
    "HTTPTAP",
}
HAVE_SYSTEM_BUNDLE = bool(trust.existing_bundle_targets())
OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.ephemeral()


def verify_handshake(authority: CertificateAuthority, name: str, *, cafile: str | None = None,
                     capath: str | None = None) -> ssl.SSLObject:
    """A client trusting only cafile/capath completes a handshake with httptap's leaf."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cafile=cafile, capath=capath)
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = authority.server_context(name).wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(20):
        for i, obj in enumerate((client, server)):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            return client
    raise AssertionError("handshake did not finish")


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _openssl_hash(pem: bytes) -> int:
    assert OPENSSL
    out = subprocess.run([OPENSSL, "x509", "-hash", "-noout"], input=pem, capture_output=True,
                         check=True)
    return int(out.stdout.strip(), 16)


# ---------------------------------------------------------------------- environment

def test_environment_is_exactly_the_spec() -> None:
    env = trust.environment("/run/b.crt", "/run/certs", "/run/t.p12", {})
    assert set(env) == SPEC_VARIABLES == trust.TRUST_VARIABLES
    for name in SPEC_VARIABLES - {"SSL_CERT_DIR", "_JAVA_OPTIONS", "HTTPTAP"}:
        assert env[name] == "/run/b.crt", name
    assert env["SSL_CERT_DIR"] == "/run/certs"
    assert env["HTTPTAP"] == "1"
    java = ("-Djavax.net.ssl.trustStore=/run/t.p12 -Djavax.net.ssl.trustStoreType=PKCS12 "
            "-Djavax.net.ssl.trustStorePassword=changeit")
    assert env["_JAVA_OPTIONS"] == java
    assert "JDK_JAVA_OPTIONS" not in env  # one variable, one "Picked up" note from Java


def test_java_options_are_appended() -> None:
    env = trust.environment("/b", "/d", "/t.p12", {"_JAVA_OPTIONS": "-Xmx1g ",
                                                   "JDK_JAVA_OPTIONS": "",
                                                   "SSL_CERT_FILE": "/mine.pem"})
    assert env["_JAVA_OPTIONS"].startswith("-Xmx1g -Djavax.net.ssl.trustStore=/t.p12 ")
    assert "JDK_JAVA_OPTIONS" not in env                 # the user's own, untouched
    assert env["SSL_CERT_FILE"] == "/b"                  # ours replaces, it holds the roots


# ---------------------------------------------------------------------- bundles

def test_existing_bundle_targets_follow_symlinks(tmp_path: os.PathLike[str]) -> None:
    real = os.path.join(tmp_path, "real.pem")
    _write(real, b"")
    link = os.path.join(tmp_path, "link.pem")
    os.symlink(real, link)
    dangling = os.path.join(tmp_path, "dangling.pem")
    os.symlink(os.path.join(tmp_path, "nowhere"), dangling)
    missing = os.path.join(tmp_path, "missing.pem")
    assert trust.existing_bundle_targets([link, missing, dangling, real]) == [
        os.path.realpath(real)]


def test_system_bundle_paths() -> None:
    assert trust.SYSTEM_BUNDLE_PATHS[:3] == (
        "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem")
    for path in trust.existing_bundle_targets():
        assert os.path.isabs(path) and not os.path.islink(path)


@pytest.mark.skipif(not HAVE_SYSTEM_BUNDLE, reason="no system CA bundle on this host")
@pytest.mark.filterwarnings("ignore:Parsed a serial number")   # an old root's serial
def test_combined_bundle_has_system_roots_then_ca(authority: CertificateAuthority) -> None:
    bundle = trust.combined_bundle(authority.cert_pem)
    certs = x509.load_pem_x509_certificates(bundle)
    system = x509.load_pem_x509_certificates(trust.system_roots())
    assert len(certs) == len(system) + 1 and len(system) > 10
    assert certs[-1] == authority.cert
    assert certs[:-1] == system


def test_combined_bundle_without_system_bundle(tmp_path: os.PathLike[str],
                                               authority: CertificateAuthority) -> None:
    assert trust.combined_bundle(authority.cert_pem,
                                 [os.path.join(tmp_path, "none")]) == authority.cert_pem


def test_combined_bundle_skips_unreadable_and_adds_newline(
        tmp_path: os.PathLike[str], authority: CertificateAuthority) -> None:
    other = CertificateAuthority.ephemeral()
    path = os.path.join(tmp_path, "roots.pem")
    _write(path, other.cert_pem.rstrip(b"\n"))            # no final newline
    directory = os.path.join(tmp_path, "a-directory")     # open() fails: skipped
    os.mkdir(directory)
    certs = x509.load_pem_x509_certificates(
        trust.combined_bundle(authority.cert_pem, [directory, path]))
    assert certs == [other.cert, authority.cert]


def test_combined_bundle_verifies_leaves(tmp_path: os.PathLike[str],
                                         authority: CertificateAuthority) -> None:
    path = os.path.join(tmp_path, "bundle.crt")
    _write(path, trust.combined_bundle(authority.cert_pem))
    for name in ("www.example.com", "10.20.30.40", "fd00::1"):
        client = verify_handshake(authority, name, cafile=path)
        assert client.getpeercert()


# ---------------------------------------------------------------------- subject hash

def _cert_with_subject(name: x509.Name) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


TRICKY_SUBJECTS = [
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "  Mixed   CASE\tName  ")]),
    x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bücher GmbH"),
               x509.NameAttribute(NameOID.EMAIL_ADDRESS, "Root@Example.COM")]),
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BMP Ünïcode",
                                  _type=_ASN1Type.BMPString)]),
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Universal ÄB",
                                  _type=_ASN1Type.UniversalString)]),
    x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "12345",
                                  _type=_ASN1Type.PrintableString),
               x509.NameAttribute(NameOID.COMMON_NAME, "T61 Name", _type=_ASN1Type.T61String)]),
    x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Zeta"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Alpha Multi-Valued")])]),
    x509.Name([]),
]


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command")
@pytest.mark.parametrize("index", range(len(TRICKY_SUBJECTS)))
def test_subject_hash_agrees_with_openssl(index: int) -> None:
    pem = _cert_with_subject(TRICKY_SUBJECTS[index])
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert trust.subject_hash(der) == _openssl_hash(pem)


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command")
def test_ca_subject_hash_agrees_with_openssl(authority: CertificateAuthority) -> None:
    der = authority.cert.public_bytes(serialization.Encoding.DER)
    assert trust.subject_hash(der) == _openssl_hash(authority.cert_pem)


def test_subject_hash_matches_the_host_hashed_dir() -> None:
    links = glob.glob("/etc/ssl/certs/[0-9a-f]*.[0-9]")
    if not links:
        pytest.skip("no hashed directory on this host")
    for link in links:
        with open(link, "rb") as f:
            (der,) = trust.pem_certificates(f.read())
        assert f"{trust.subject_hash(der):08x}" == os.path.basename(link)[:8], link


def test_subject_hash_rejects_garbage() -> None:
    for data in (b"", b"\x30", b"\x30\x03\x30\x01\x00", b"\x30\x82\xff\xff"):
        with pytest.raises(ValueError):
            trust.subject_hash(data)


# ---------------------------------------------------------------------- SSL_CERT_DIR

def test_hashed_cert_dir_verifies_leaves(tmp_path: os.PathLike[str],
                                         authority: CertificateAuthority) -> None:
    directory = os.path.join(tmp_path, "certs")
    names = trust.hashed_cert_dir(authority.cert_pem, directory)
    assert sorted(names) == sorted(os.listdir(directory))
    der = authority.cert.public_bytes(serialization.Encoding.DER)
    ours = f"{trust.subject_hash(der):08x}.0"
    with open(os.path.join(directory, ours), "rb") as f:
        assert x509.load_pem_x509_certificate(f.read()) == authority.cert
    if HAVE_SYSTEM_BUNDLE:
        assert len(names) == len(trust.pem_certificates(trust.system_roots())) + 1
    for name in ("dir.example", "192.0.2.8"):
        verify_handshake(authority, name, capath=directory)


def test_hashed_cert_dir_numbers_collisions(tmp_path: os.PathLike[str]) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Same Subject")])
    first, second = _cert_with_subject(name), _cert_with_subject(name)
    directory = os.path.join(tmp_path, "certs")
    names = trust.hashed_cert_dir(first, directory, bundle=second)
    digest = trust.subject_hash(x509.load_pem_x509_certificate(first).public_bytes(
        serialization.Encoding.DER))
    assert names == [f"{digest:08x}.0", f"{digest:08x}.1"]


# ---------------------------------------------------------------------- Java

def test_java_truststore_loads(authority: CertificateAuthority) -> None:
    other = CertificateAuthority.ephemeral()
    store = pkcs12.load_pkcs12(trust.java_truststore(authority.cert_pem, other.cert_pem),
                               b"changeit")
    assert store.key is None
    assert [c.certificate for c in store.additional_certs] == [authority.cert, other.cert]
    assert store.additional_certs[0].friendly_name == b"httptap-ca"
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(trust.java_truststore(authority.cert_pem), b"wrong")


@pytest.mark.skipif(shutil.which("keytool") is None, reason="no keytool")
def test_keytool_sees_trusted_entries(tmp_path: os.PathLike[str],
                                      authority: CertificateAuthority) -> None:
    path = os.path.join(tmp_path, "t.p12")
    _write(path, trust.java_truststore(authority.cert_pem))
    out = subprocess.run(["keytool", "-list", "-keystore", path, "-storetype", "PKCS12",
                          "-storepass", "changeit"], capture_output=True, text=True,
                         check=True, timeout=60)
    assert "httptap-ca" in out.stdout and "trustedCertEntry" in out.stdout


# ---------------------------------------------------------------------- build

def test_build(tmp_path: os.PathLike[str], authority: CertificateAuthority) -> None:
    roots = CertificateAuthority.ephemeral()
    system = os.path.join(tmp_path, "system.pem")
    _write(system, roots.cert_pem)
    link = os.path.join(tmp_path, "link.pem")
    os.symlink(system, link)
    run = os.path.join(tmp_path, "run")
    os.mkdir(run)
    files = trust.build(authority.cert_pem, run, {"_JAVA_OPTIONS": "-Xss2m"},
                        bundle_paths=[link, system])
    assert files.overlay_targets == [os.path.realpath(system)]
    assert set(files.environ) == SPEC_VARIABLES
    assert files.environ["SSL_CERT_FILE"] == files.bundle_path
    assert files.environ["SSL_CERT_DIR"] == files.cert_dir
    assert files.environ["_JAVA_OPTIONS"].startswith("-Xss2m -Djavax.net.ssl.trustStore="
                                                     + files.truststore_path)
    with open(files.bundle_path, "rb") as f:
        assert x509.load_pem_x509_certificates(f.read()) == [roots.cert, authority.cert]
    assert len(os.listdir(files.cert_dir)) == 2
    with open(files.truststore_path, "rb") as f:
        store = pkcs12.load_pkcs12(f.read(), b"changeit")
    assert [c.certificate for c in store.additional_certs] == [authority.cert, roots.cert]
    verify_handshake(authority, "build.example", cafile=files.bundle_path)


def test_build_links_a_hashed_directory_next_to_the_bundle(
        tmp_path: os.PathLike[str], authority: CertificateAuthority) -> None:
    """Where the system bundle sits in a hashed directory (Debian's /etc/ssl/certs), the
    run's SSL_CERT_DIR links its entries instead of hashing every root again."""
    roots = [CertificateAuthority.ephemeral() for _ in range(2)]
    host = os.path.join(tmp_path, "host")
    bundle = b"".join(r.cert_pem for r in roots)
    names = trust.hashed_cert_dir(b"", host, bundle=bundle)  # the host's own entries
    _write(os.path.join(host, "ca-certificates.crt"), bundle)
    run = os.path.join(tmp_path, "run")
    os.mkdir(run)
    files = trust.build(authority.cert_pem, run, {},
                        bundle_paths=[os.path.join(host, "ca-certificates.crt")])
    entries = sorted(os.listdir(files.cert_dir))
    assert len(entries) == 3 and set(names) < set(entries)
    for name in names:
        assert os.readlink(os.path.join(files.cert_dir, name)) == os.path.join(host, name)
    for name in ("linked.example",):
        verify_handshake(authority, name, capath=files.cert_dir)   # our CA is there
    assert trust.linked_cert_dir(authority.cert_pem, os.path.join(tmp_path, "x"),
                                 run) is None                       # no hashed entries
