"""The run's certificate authority, and the server certificates it mints for intercepted TLS.

Role in the pipeline: the proxy stage owns one :class:`CertificateAuthority`. When a
connection's ClientHello has been read (:mod:`httptap.tls.clienthello`) and the upstream
handshake has agreed on a protocol, the proxy asks :meth:`CertificateAuthority.server_context`
for an ``ssl.SSLContext`` that presents a certificate for the ClientHello's SNI (or the
destination IP when there is none), and terminates the command's TLS with it over memory
BIOs. :mod:`httptap.tls.trust` makes the command's namespace trust :attr:`cert_pem`.

Theory of operation
-------------------
* By default the CA is :meth:`~CertificateAuthority.ephemeral`: a fresh EC P-256 key and a
  self-signed certificate valid for 30 days, made in memory for this run; the key is never
  written anywhere. ``--ca DIR`` uses :meth:`~CertificateAuthority.load_or_create`, which
  reads ``DIR/ca.pem`` and ``DIR/ca-key.pem`` or creates them there once (valid one year),
  under an ``flock`` on the directory so two runs never race to create different CAs.
  A CA brought by the user (for example an RSA one) works too, as long as it is a CA
  certificate whose key matches.
* Leaf certificates carry what strict verifiers (OpenSSL's ``X509_V_FLAG_X509_STRICT``,
  browsers, Go, Java) want: a subjectAltName (a ``DNSName``, or an ``IPAddress`` when the
  name parses as one), CN = the name cut to 64 characters, extendedKeyUsage serverAuth,
  keyUsage digitalSignature, basicConstraints CA:false, subject and authority key
  identifiers. Validity is one hour back to 30 days ahead, clamped into the CA's own.
  Each leaf has its own EC P-256 key (generating one is cheaper than signing).
* The chain served is the leaf alone when the CA is a root (self-issued): the command
  trusts that root already (the run's trust files carry it), and RFC 8446 (4.4.2) lets a
  server leave out the trust anchor. Sending it cost the command ~210 µs of verification
  per full handshake (Python on OpenSSL 3.0, measured). A CA that is not self-issued (an
  intermediate given with ``--ca``) is sent after the leaf, so the command can build the
  path to the root it trusts.
* ``ssl.SSLContext.load_cert_chain`` reads only files, so the leaf's key and chain are
  written into an anonymous memory file (``os.memfd_create``) and loaded
  through ``/proc/self/fd/N``: nothing ever reaches a disk. Where memfd or ``/proc`` is
  missing, a private temporary directory (mode 0700, removed at exit) holds the file for
  the instant of the load and the file is unlinked right after.
* Minting a leaf costs about 0.25 ms and building its context about 1.6 ms more (measured
  on the development machine; a cached context is under a microsecond), so leaves are
  cached per name and contexts per ``(name, ALPN list)``, each in a bounded LRU.
  The caches are guarded by a lock, so threads may share one CA.

Not implemented: CRLs, OCSP, name constraints on the CA, RSA leaves.
"""

from __future__ import annotations

import atexit
import datetime as dt
import fcntl
import ipaddress
import os
import shutil
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA_CERT_FILE", "CA_KEY_FILE", "CAError", "CertificateAuthority", "normalize_name"]

CA_CERT_FILE: Final = "ca.pem"
CA_KEY_FILE: Final = "ca-key.pem"

EPHEMERAL_CA_LIFETIME: Final = dt.timedelta(days=30)
PERSISTENT_CA_LIFETIME: Final = dt.timedelta(days=365)
CA_BACKDATE: Final = dt.timedelta(days=1)
LEAF_LIFETIME: Final = dt.timedelta(days=30)
LEAF_BACKDATE: Final = dt.timedelta(hours=1)
CN_MAX: Final = 64
DEFAULT_CACHE_SIZE: Final = 4096

_SigningKey: TypeAlias = (ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                          | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
_SIGNING_KEY_TYPES: Final = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey,
                             ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


class CAError(Exception):
    """The CA cannot be loaded, created or used; the message is one line for the user."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def normalize_name(name: str) -> str:
    """The name a certificate is minted for: lower case, no trailing dot, IDNA A-labels.

    IP addresses come back in their canonical text form (``::1``, ``10.0.0.1``). Raises
    :class:`CAError` for an empty name or one that cannot be put in a certificate.
    """
    name = name.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name:
        raise CAError("cannot mint a certificate for an empty name")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise CAError(f"cannot mint a certificate for {name!r}: not a valid host name") from exc
    if any(ch.isspace() or ord(ch) < 0x21 or ch in "/\\" for ch in name):
        raise CAError(f"cannot mint a certificate for {name!r}: not a valid host name")
    return name


def _hash_for(key: _SigningKey) -> hashes.SHA256 | None:
    """The signature hash to use with a CA key (Ed25519/Ed448 take none)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _key_pem(key: _SigningKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class _KeyFileLoader:
    """Where ``load_cert_chain`` reads a key and chain from: a memfd, else a private temp dir."""

    def __init__(self) -> None:
        self._use_memfd = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
        self._tmpdir: str | None = None
        self._lock = threading.Lock()

    def load(self, ctx: ssl.SSLContext, pem: bytes) -> None:
        """Load a PEM holding the key and the chain into ``ctx`` without leaving a file."""
        if self._use_memfd:
            try:
                self._load_memfd(ctx, pem)
                return
            except OSError:
                self._use_memfd = False  # e.g. /proc mounted without our fds: fall back
        self._load_tmpfile(ctx, pem)

    @staticmethod
    def _load_memfd(ctx: ssl.SSLContext, pem: bytes) -> None:
        fd = os.memfd_create("httptap-leaf", os.MFD_CLOEXEC)
        try:
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view):]
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def _private_dir(self) -> str:
        with self._lock:
            if self._tmpdir is None:
                self._tmpdir = tempfile.mkdtemp(prefix="httptap-ca-")  # mode 0700
                atexit.register(shutil.rmtree, self._tmpdir, True)
            return self._tmpdir

    def _load_tmpfile(self, ctx: ssl.SSLContext, pem: bytes) -> None:
        fd, path = tempfile.mkstemp(dir=self._private_dir(), suffix=".pem")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            ctx.load_cert_chain(path)
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


_LOADER = _KeyFileLoader()


class CertificateAuthority:
    """A CA certificate and key, and the leaf certificates and server contexts made from them.

    Make one with :meth:`ephemeral` or :meth:`load_or_create`. ``keylog_filename``, when set,
    is given to every server context (``--keylog``: NSS key-log lines, appended).
    """

    def __init__(self, key: _SigningKey, cert: x509.Certificate, *,
                 keylog_filename: str | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._key = key
        self.cert: x509.Certificate = cert
        self.cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
        # What follows each leaf in the chain served (see the module's docstring).
        self._chain_tail = b"" if cert.issuer == cert.subject else self.cert_pem
        self.keylog_filename = keylog_filename
        self._cache_size = cache_size
        self._leaves: OrderedDict[str, tuple[x509.Certificate, bytes]] = OrderedDict()
        self._contexts: OrderedDict[tuple[str, tuple[str, ...]], ssl.SSLContext] = OrderedDict()
        self._lock = threading.Lock()
        try:
            self._ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            self._ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
        self._not_before = cert.not_valid_before_utc
        self._not_after = cert.not_valid_after_utc

    # ------------------------------------------------------------------ making a CA

    @classmethod
    def ephemeral(cls, *, now: dt.datetime | None = None,
                  keylog_filename: str | None = None) -> CertificateAuthority:
        """A fresh CA for this run, valid for 30 days; its key exists only in memory."""
        key, cert = _new_ca(now or _now(), EPHEMERAL_CA_LIFETIME)
        return cls(key, cert, keylog_filename=keylog_filename)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, *,
                 keylog_filename: str | None = None) -> CertificateAuthority:
        """The CA whose certificate and unencrypted key are given (see :meth:`key_pem`)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CAError(f"cannot load the CA: {exc}") from exc
        if not isinstance(key, _SIGNING_KEY_TYPES):
            raise CAError(f"unsupported CA key type {type(key).__name__}")
        return cls(key, cert, keylog_filename=keylog_filename)

    def key_pem(self) -> bytes:
        """The CA's private key as unencrypted PKCS#8 PEM, to hand to another process.

        Stages forked after the CA was made inherit it and need not call this; never
        write the result to a file for an ephemeral CA.
        """
        return _key_pem(self._key)

    @classmethod
    def load_or_create(cls, directory: str, *,
                       keylog_filename: str | None = None) -> CertificateAuthority:
        """The CA in ``directory`` (``ca.pem``, ``ca-key.pem``), created there on first use.

        A new directory is made with mode 0700 and the key file with mode 0600. Raises
        :class:`CAError` with a one-line message when the files cannot be read, do not
        parse, do not match, are not a CA, or the CA has expired.
        """
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise CAError(f"--ca {directory}: cannot use the directory: {exc.strerror}") from exc
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)  # serialise runs that share the directory
            cert_path = os.path.join(directory, CA_CERT_FILE)
            key_path = os.path.join(directory, CA_KEY_FILE)
            have_cert, have_key = os.path.lexists(cert_path), os.path.lexists(key_path)
            key: _SigningKey
            if not have_cert and not have_key:
                key, cert = _new_ca(_now(), PERSISTENT_CA_LIFETIME)
                _write_new(directory, key_path, _key_pem(key), 0o600)
                _write_new(directory, cert_path, cert.public_bytes(serialization.Encoding.PEM),
                           0o644)
            else:
                if not have_cert or not have_key:
                    missing = cert_path if not have_cert else key_path
                    raise CAError(f"--ca {directory}: {missing} is missing; restore it, or "
                                  f"remove both {CA_CERT_FILE} and {CA_KEY_FILE} to make a new CA")
                key, cert = _load_ca(cert_path, key_path)
        finally:
            os.close(dir_fd)  # closing releases the lock
        return cls(key, cert, keylog_filename=keylog_filename)

    # ------------------------------------------------------------------ leaves

    def leaf_certificate(self, name: str) -> x509.Certificate:
        """The leaf certificate for ``name`` (minted on first use, then cached)."""
        return self._leaf(normalize_name(name))[0]

    def server_context(self, name: str, alpn: Sequence[str] | None = None) -> ssl.SSLContext:
        """A server ``SSLContext`` presenting a certificate for ``name`` (a DNS name or an IP).

        The context serves the chain leaf + CA, accepts TLS 1.2 and 1.3, and offers ``alpn``
        (in the server's order of preference) when given. Contexts are cached per
        ``(name, alpn)`` as given, leaves per normalised name (:func:`normalize_name`);
        treat the result as shared and do not change it. Raises :class:`CAError`.
        """
        key = (name, tuple(alpn or ()))  # the name as given: a hit costs no normalising
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is not None:
                self._contexts.move_to_end(key)
                return ctx
        host = normalize_name(name)
        _cert, chain_pem = self._leaf(host)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            _LOADER.load(ctx, chain_pem)
        except (ssl.SSLError, OSError) as exc:
            raise CAError(f"cannot load the certificate minted for {host}: {exc}") from exc
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if self.keylog_filename:
            ctx.keylog_filename = self.keylog_filename
        # One TLS 1.3 session ticket per full handshake, not OpenSSL's two: each costs ~20 µs
        # to make (and the command ~8 µs to read) on every connection of a client that never
        # resumes, the common case behind httptap. A client that resumes still can: OpenSSL
        # sends one fresh ticket after every resumed handshake.
        ctx.num_tickets = 1
        with self._lock:
            ctx = self._contexts.setdefault(key, ctx)
            self._contexts.move_to_end(key)
            while len(self._contexts) > self._cache_size:
                self._contexts.popitem(last=False)
        return ctx

    def _leaf(self, host: str) -> tuple[x509.Certificate, bytes]:
        """(certificate, PEM of key + leaf + CA) for a normalised name, cached."""
        with self._lock:
            hit = self._leaves.get(host)
            if hit is not None:
                self._leaves.move_to_end(host)
                return hit
        leaf = self._mint(host, _now())
        with self._lock:
            leaf = self._leaves.setdefault(host, leaf)
            self._leaves.move_to_end(host)
            while len(self._leaves) > self._cache_size:
                self._leaves.popitem(last=False)
        return leaf

    def _mint(self, host: str, now: dt.datetime) -> tuple[x509.Certificate, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        san: x509.GeneralName
        try:
            san = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        not_before = max(now - LEAF_BACKDATE, self._not_before)
        not_after = min(now + LEAF_LIFETIME, self._not_after)
        if not_after <= not_before:
            raise CAError(f"the CA expired on {self._not_after:%Y-%m-%d}; "
                          "cannot mint certificates with it")
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:CN_MAX])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski),
                critical=False)
            .sign(self._key, _hash_for(self._key))
        )
        chain = _key_pem(key) + cert.public_bytes(serialization.Encoding.PEM) + self._chain_tail
        return cert, chain


# ---------------------------------------------------------------------- CA files


def _new_ca(now: dt.datetime, lifetime: dt.timedelta) -> tuple[ec.EllipticCurvePrivateKey,
                                                               x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "httptap"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"httptap CA {now:%Y-%m-%d %H:%M:%S}"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CA_BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _write_new(directory: str, path: str, data: bytes, mode: int) -> None:
    """Write ``path`` whole or not at all: a temporary file in the directory, then rename."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".httptap-", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CAError(f"cannot write {path}: {exc.strerror}") from exc


def _load_ca(cert_path: str, key_path: str) -> tuple[_SigningKey, x509.Certificate]:
    try:
        with open(cert_path, "rb") as f:
            cert_data = f.read()
        with open(key_path, "rb") as f:
            key_data = f.read()
    except OSError as exc:
        raise CAError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError as exc:
        raise CAError(f"{cert_path} is not a PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError as exc:
        raise CAError(f"{key_path} is encrypted; httptap needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CAError(f"{key_path} is not a PEM private key") from exc
    if not isinstance(key, _SIGNING_KEY_TYPES):
        raise CAError(f"{key_path}: unsupported key type {type(key).__name__}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise CAError(f"{key_path} is not the key of {cert_path}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CAError(f"{cert_path} is not a CA certificate (basicConstraints CA:true missing)")
    if cert.not_valid_after_utc <= _now():
        raise CAError(f"the CA in {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                      f"remove {CA_CERT_FILE} and {CA_KEY_FILE} to make a new one")
    return key, cert
