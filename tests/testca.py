"""A test certificate authority for the test hosts' TLS servers (``cryptography``, EC P-256).

``session_ca()`` is one CA per test process, made on first use (a few
milliseconds). ``TestCA.issue(names)`` mints a server certificate whose
subjectAltName holds each name as a DNS name or, when it parses as one, an IP
address; ``not_before``/``not_after`` make expired or not-yet-valid ones.
Certificates carry the extensions strict verifiers want (basicConstraints,
keyUsage, extendedKeyUsage serverAuth, subject and authority key identifiers).

httptap is told to trust the CA through ``SSL_CERT_FILE=<TestHost.ca_file>``
in its own environment; direct clients use ``curl --cacert``,
``GIT_SSL_CAINFO``, ``pip --cert``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCA", "san_entries", "session_ca"]

_ONE_DAY = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    """Each name as an ``IPAddress`` entry if it is an IPv4/IPv6 address, else a ``DNSName``."""
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


class TestCA:
    """A self-signed CA (EC P-256) that issues server certificates."""

    __test__ = False

    def __init__(self, common_name: str = "httptap test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "httptap tests")])
        now = _now()
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + 30 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = _key_pem(self.key)

    def issue(self, names: list[str], *, not_after: dt.datetime | None = None,
              not_before: dt.datetime | None = None) -> tuple[bytes, bytes]:
        """A server certificate for ``names`` (DNS names or IP addresses): (cert PEM, key PEM).

        Valid from a day ago for 30 days unless ``not_before``/``not_after`` say otherwise
        (naive datetimes are taken as UTC). The first name is also the subject's CN.
        """
        if not names:
            raise ValueError("a certificate needs at least one name")
        now = _now()
        not_before = not_before or now - _ONE_DAY
        not_after = not_after or now + 30 * _ONE_DAY
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def write_ca(self, path: str | os.PathLike[str]) -> str:
        """Write the CA certificate (PEM, world-readable: httptap may run as another user)."""
        with open(path, "wb") as f:
            f.write(self.cert_pem)
        os.chmod(path, 0o644)
        return os.fspath(path)

    def issue_files(self, names: list[str], directory: str | os.PathLike[str], stem: str, *,
                    not_after: dt.datetime | None = None,
                    not_before: dt.datetime | None = None) -> tuple[str, str]:
        """``issue()`` into ``<directory>/<stem>.crt`` and ``<stem>.key`` (mode 0600)."""
        cert_pem, key_pem = self.issue(names, not_after=not_after, not_before=not_before)
        cert_path = os.path.join(directory, f"{stem}.crt")
        key_path = os.path.join(directory, f"{stem}.key")
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        return cert_path, key_path


_session: TestCA | None = None


def session_ca() -> TestCA:
    """The CA of this test process (made once)."""
    global _session
    if _session is None:
        _session = TestCA()
    return _session
