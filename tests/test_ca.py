"""Tests for httptap.tls.ca: the CA's certificate, minted leaves, server contexts and ``--ca DIR``.

Handshakes run in memory: a client ``SSLObject`` and a server ``SSLObject`` over memory
BIOs, bytes shuttled by :func:`handshake`, so no socket or thread is involved.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from httptap.tls import ca as ca_module
from httptap.tls.ca import CAError, CertificateAuthority, normalize_name


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.ephemeral()


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
              server_hostname: str | None) -> tuple[ssl.SSLObject, ssl.SSLObject, bytes]:
    """Run a TLS handshake in memory; returns (client, server, every byte the server sent)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    sent_by_server = bytearray()
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        data = s_out.read()
        sent_by_server += data
        c_in.write(data)
        if all(done.values()):
            return client, server, bytes(sent_by_server)
    raise AssertionError("handshake did not finish")


def peer(client: ssl.SSLObject) -> dict[str, Any]:
    """The verified peer certificate as ``getpeercert()`` gives it."""
    cert = client.getpeercert()
    assert cert is not None
    return dict(cert)


def client_context(ca_pem: bytes, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def served_certificates(server_bytes: bytes) -> list[bytes]:
    """The DER certificates in a TLS 1.2 server flight's Certificate message (cleartext)."""
    messages = bytearray()
    pos = 0
    while pos + 5 <= len(server_bytes):
        ctype, length = server_bytes[pos], int.from_bytes(server_bytes[pos + 3:pos + 5], "big")
        if ctype == 0x16:
            messages += server_bytes[pos + 5:pos + 5 + length]
        pos += 5 + length
    pos = 0
    while pos + 4 <= len(messages):
        mtype, mlen = messages[pos], int.from_bytes(messages[pos + 1:pos + 4], "big")
        body = messages[pos + 4:pos + 4 + mlen]
        if mtype == 11:                                   # Certificate
            certs, i = [], 3
            while i < len(body):
                n = int.from_bytes(body[i:i + 3], "big")
                certs.append(bytes(body[i + 3:i + 3 + n]))
                i += 3 + n
            return certs
        pos += 4 + mlen
    raise AssertionError("no Certificate message")


# ---------------------------------------------------------------------- the CA itself

def test_ephemeral_ca_certificate(authority: CertificateAuthority) -> None:
    cert = authority.cert
    assert authority.cert_pem == cert.public_bytes(serialization.Encoding.PEM)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(cn, str) and cn.startswith("httptap CA ")
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    now = dt.datetime.now(dt.timezone.utc)
    assert cert.not_valid_before_utc <= now - dt.timedelta(hours=23)
    assert now + dt.timedelta(days=29) < cert.not_valid_after_utc <= now + dt.timedelta(days=31)


def test_each_ephemeral_ca_is_new() -> None:
    a, b = CertificateAuthority.ephemeral(), CertificateAuthority.ephemeral()
    assert a.cert.public_key() != b.cert.public_key()
    assert a.cert.serial_number != b.cert.serial_number


def test_from_pem_round_trip(authority: CertificateAuthority) -> None:
    copy = CertificateAuthority.from_pem(authority.cert_pem, authority.key_pem())
    assert copy.cert == authority.cert
    handshake(copy.server_context("copy.example"), client_context(authority.cert_pem),
              "copy.example")
    with pytest.raises(CAError):
        CertificateAuthority.from_pem(authority.cert_pem, b"not a key")


# ---------------------------------------------------------------------- leaves

def test_leaf_for_a_dns_name(authority: CertificateAuthority) -> None:
    leaf = authority.leaf_certificate("www.Example.COM.")
    leaf.verify_directly_issued_by(authority.cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.com"]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "www.example.com"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = authority.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    now = dt.datetime.now(dt.timezone.utc)
    assert now - dt.timedelta(hours=2) < leaf.not_valid_before_utc <= now
    assert leaf.not_valid_after_utc <= now + dt.timedelta(days=30, minutes=1)


@pytest.mark.parametrize("name, address", [
    ("10.1.2.3", "10.1.2.3"), ("2001:db8::1", "2001:db8::1"), ("[::1]", "::1"),
])
def test_leaf_for_an_ip_address(authority: CertificateAuthority, name: str,
                                address: str) -> None:
    leaf = authority.leaf_certificate(name)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(address)]
    assert san.get_values_for_type(x509.DNSName) == []


def test_long_name_cuts_cn_but_not_san(authority: CertificateAuthority) -> None:
    name = ".".join(["a" * 40, "b" * 40, "example"])
    leaf = authority.leaf_certificate(name)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name[:64]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]


def test_unicode_name_becomes_a_label(authority: CertificateAuthority) -> None:
    assert normalize_name("bücher.example") == "xn--bcher-kva.example"


@pytest.mark.parametrize("bad", ["", ".", "a b.example", "a/b"])
def test_bad_names_raise_ca_error(authority: CertificateAuthority, bad: str) -> None:
    with pytest.raises(CAError):
        authority.server_context(bad)


def test_leaf_never_outlives_the_ca() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    authority = CertificateAuthority.ephemeral(now=now - dt.timedelta(days=29, hours=23))
    leaf = authority.leaf_certificate("soon.example")
    assert leaf.not_valid_after_utc == authority.cert.not_valid_after_utc


def test_leaves_are_cached_per_name(authority: CertificateAuthority) -> None:
    a = authority.leaf_certificate("cache.example")
    assert authority.leaf_certificate("CACHE.example.") is a
    assert authority.leaf_certificate("other.example") is not a


def test_contexts_are_cached_per_name_and_alpn(authority: CertificateAuthority) -> None:
    a = authority.server_context("ctx.example", ["h2", "http/1.1"])
    assert authority.server_context("ctx.example", ["h2", "http/1.1"]) is a
    assert authority.server_context("ctx.example", ("h2", "http/1.1")) is a
    b = authority.server_context("ctx.example", ["http/1.1"])
    assert b is not a
    assert authority.server_context("ctx.example") is not a
    # Every context of one name presents the same leaf.
    for ctx in (a, b):
        client, _, _ = handshake(ctx, client_context(authority.cert_pem), "ctx.example")
        der = client.getpeercert(binary_form=True)
        assert der == authority.leaf_certificate("ctx.example").public_bytes(
            serialization.Encoding.DER)


def test_cache_is_bounded() -> None:
    authority = CertificateAuthority(*ca_module._new_ca(dt.datetime.now(dt.timezone.utc),
                                                        dt.timedelta(days=1)), cache_size=2)
    first = authority.server_context("a.example")
    authority.server_context("b.example")
    authority.server_context("c.example")
    assert authority.server_context("a.example") is not first
    assert len(authority._contexts) == 2 and len(authority._leaves) == 2


# ---------------------------------------------------------------------- server contexts

def test_handshake_verifies_with_alpn(authority: CertificateAuthority) -> None:
    server_ctx = authority.server_context("api.example", ["h2", "http/1.1"])
    assert server_ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    client, server, _ = handshake(server_ctx, client_context(authority.cert_pem,
                                                             ["http/1.1", "h2"]), "api.example")
    assert client.selected_alpn_protocol() == "h2"
    assert server.selected_alpn_protocol() == "h2"
    assert client.version() == "TLSv1.3"
    assert dict(x[0] for x in peer(client)["subject"])["commonName"] == "api.example"


def test_handshake_for_an_ip_address(authority: CertificateAuthority) -> None:
    client, _, _ = handshake(authority.server_context("10.9.8.7"),
                             client_context(authority.cert_pem), "10.9.8.7")
    assert peer(client)["subjectAltName"] == (("IP Address", "10.9.8.7"),)


def test_wrong_name_fails_verification(authority: CertificateAuthority) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(authority.server_context("right.example"),
                  client_context(authority.cert_pem), "wrong.example")


def test_a_root_ca_is_left_out_of_the_chain(authority: CertificateAuthority) -> None:
    # The command trusts the root already; RFC 8446 4.4.2 lets the server leave it out,
    # which saves the command a certificate to parse and check on every full handshake.
    client_ctx = client_context(authority.cert_pem)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2   # Certificate message in clear
    client, _, sent = handshake(authority.server_context("chain.example"), client_ctx,
                                "chain.example")
    [leaf_der] = served_certificates(sent)
    assert x509.load_der_x509_certificate(leaf_der) == authority.leaf_certificate("chain.example")
    assert peer(client)["subjectAltName"] == (("DNS", "chain.example"),)


def _intermediate_under_a_root() -> tuple[bytes, CertificateAuthority]:
    """(the root's PEM, a CertificateAuthority whose CA is an intermediate under it)."""
    now = dt.datetime.now(dt.timezone.utc)

    def ca_cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                issuer_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    issuer_key.public_key()), critical=False)
                .sign(issuer_key, hashes.SHA256()))

    root_key = ec.generate_private_key(ec.SECP256R1())
    root = ca_cert("test root", root_key, "test root", root_key)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid = ca_cert("test intermediate", mid_key, "test root", root_key)
    return root.public_bytes(serialization.Encoding.PEM), CertificateAuthority(mid_key, mid)


def test_an_intermediate_ca_is_sent_after_the_leaf() -> None:
    # A CA given with --ca may be an intermediate: the command trusts only its root, so
    # the path to it must be served.
    root_pem, intermediate = _intermediate_under_a_root()
    client_ctx = client_context(root_pem)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client, _, sent = handshake(intermediate.server_context("mid.example"), client_ctx,
                                "mid.example")
    leaf_der, ca_der = served_certificates(sent)
    assert x509.load_der_x509_certificate(leaf_der) == intermediate.leaf_certificate("mid.example")
    assert x509.load_der_x509_certificate(ca_der) == intermediate.cert
    assert peer(client)["subjectAltName"] == (("DNS", "mid.example"),)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_1_1_is_refused(authority: CertificateAuthority) -> None:
    client_ctx = client_context(authority.cert_pem)
    client_ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    client_ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        handshake(authority.server_context("old.example"), client_ctx, "old.example")


def test_keylog(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "keys.log")
    authority = CertificateAuthority.ephemeral(keylog_filename=path)
    handshake(authority.server_context("k.example"), client_context(authority.cert_pem),
              "k.example")
    with open(path) as f:
        lines = f.read().splitlines()
    assert any(line.startswith("CLIENT_HANDSHAKE_TRAFFIC_SECRET ") for line in lines)


def test_tempfile_fallback_leaves_nothing(authority: CertificateAuthority) -> None:
    loader = ca_module._KeyFileLoader()
    loader._use_memfd = False
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _, chain = authority._leaf("fallback.example")
    loader.load(ctx, chain)
    assert loader._tmpdir is not None
    assert stat.S_IMODE(os.stat(loader._tmpdir).st_mode) == 0o700
    assert os.listdir(loader._tmpdir) == []
    handshake(ctx, client_context(authority.cert_pem), "fallback.example")


def test_memfd_is_used_and_closed(authority: CertificateAuthority) -> None:
    if not ca_module._LOADER._use_memfd:
        pytest.skip("no memfd_create or /proc here")
    before = len(os.listdir("/proc/self/fd"))
    authority.server_context("memfd.example")
    assert ca_module._LOADER._tmpdir is None            # no temporary directory was needed
    assert len(os.listdir("/proc/self/fd")) == before   # and the memfd was closed


# ---------------------------------------------------------------------- --ca DIR

def test_load_or_create_creates_once(tmp_path: os.PathLike[str]) -> None:
    directory = os.path.join(tmp_path, "ca")
    first = CertificateAuthority.load_or_create(directory)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(directory, "ca-key.pem")).st_mode) == 0o600
    assert sorted(os.listdir(directory)) == ["ca-key.pem", "ca.pem"]
    with open(os.path.join(directory, "ca.pem"), "rb") as f:
        assert f.read() == first.cert_pem
    now = dt.datetime.now(dt.timezone.utc)
    assert first.cert.not_valid_after_utc > now + dt.timedelta(days=360)
    second = CertificateAuthority.load_or_create(directory)
    assert second.cert == first.cert
    # A leaf from the reloaded CA verifies against the first one's certificate.
    handshake(second.server_context("persist.example"), client_context(first.cert_pem),
              "persist.example")


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("damage, message", [
    ("corrupt-cert", "is not a PEM certificate"),
    ("corrupt-key", "is not a PEM private key"),
    ("missing-key", "is missing"),
    ("other-key", "is not the key of"),
    ("encrypted-key", "is encrypted"),
])
def test_load_or_create_errors(tmp_path: os.PathLike[str], damage: str, message: str) -> None:
    directory = os.path.join(tmp_path, "ca")
    CertificateAuthority.load_or_create(directory)
    cert_path, key_path = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca-key.pem")
    other = ec.generate_private_key(ec.SECP256R1())
    if damage == "corrupt-cert":
        _write(cert_path, b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    elif damage == "corrupt-key":
        _write(key_path, b"garbage")
    elif damage == "missing-key":
        os.unlink(key_path)
    elif damage == "other-key":
        _write(key_path, other.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    elif damage == "encrypted-key":
        _write(key_path, other.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(CAError, match=message) as info:
        CertificateAuthority.load_or_create(directory)
    assert "\n" not in str(info.value)


def test_load_or_create_unusable_directory(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "file")
    _write(path, b"")
    with pytest.raises(CAError, match="cannot use the directory"):
        CertificateAuthority.load_or_create(path)


def test_load_or_create_key_not_a_file(tmp_path: os.PathLike[str]) -> None:
    directory = os.path.join(tmp_path, "ca")
    CertificateAuthority.load_or_create(directory)
    os.unlink(os.path.join(directory, "ca-key.pem"))
    os.mkdir(os.path.join(directory, "ca-key.pem"))
    with pytest.raises(CAError, match="cannot read .*ca-key.pem: Is a directory"):
        CertificateAuthority.load_or_create(directory)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_load_or_create_unreadable_key(tmp_path: os.PathLike[str]) -> None:
    directory = os.path.join(tmp_path, "ca")
    CertificateAuthority.load_or_create(directory)
    os.chmod(os.path.join(directory, "ca-key.pem"), 0)
    with pytest.raises(CAError, match="cannot read .*ca-key.pem"):
        CertificateAuthority.load_or_create(directory)


def _user_ca(tmp_path: os.PathLike[str], *, is_ca: bool,
             expired: bool = False) -> str:
    """A user-made RSA CA in a directory (as mkcert or openssl would leave it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "User CA")])
    now = dt.datetime.now(dt.timezone.utc)
    end = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=10)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=20)).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=is_ca,
                crl_sign=is_ca, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory = os.path.join(tmp_path, "user-ca")
    os.makedirs(directory)
    _write(os.path.join(directory, "ca.pem"), cert.public_bytes(serialization.Encoding.PEM))
    _write(os.path.join(directory, "ca-key.pem"), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return directory


def test_user_rsa_ca_is_used(tmp_path: os.PathLike[str]) -> None:
    authority = CertificateAuthority.load_or_create(_user_ca(tmp_path, is_ca=True))
    assert isinstance(authority.cert.public_key(), rsa.RSAPublicKey)
    client, _, _ = handshake(authority.server_context("rsa.example"),
                             client_context(authority.cert_pem), "rsa.example")
    assert peer(client)["subjectAltName"] == (("DNS", "rsa.example"),)


def test_user_non_ca_is_refused(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(CAError, match="is not a CA certificate"):
        CertificateAuthority.load_or_create(_user_ca(tmp_path, is_ca=False))


def test_user_expired_ca_is_refused(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(CAError, match="expired on"):
        CertificateAuthority.load_or_create(_user_ca(tmp_path, is_ca=True, expired=True))
