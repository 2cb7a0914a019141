"""What the command's namespace gets so that it trusts the run's CA.

Role in the pipeline: before the command starts, the supervisor calls :func:`build` with
the CA's PEM (:mod:`httptap.tls.ca`) and a private run directory. It gets back a CA bundle
(the host's system roots plus our CA), an ``SSL_CERT_DIR`` with OpenSSL hashed names, a
PKCS#12 trust store for Java, and the environment variables that point programs at them.
Unless ``--no-overlay``, the namespace launcher bind-mounts the bundle over every file of
:func:`existing_bundle_targets` in the command's mount namespace; the variables are set
either way (SPEC.md, "Inside the namespace").

Theory of operation
-------------------
* Bundles are PEM text. The system roots are read from the first bundle of
  :data:`SYSTEM_BUNDLE_PATHS` that can be read, and our CA is appended last; with no
  system bundle the result is our CA alone.
* ``SSL_CERT_DIR``: a directory of the run, so that our CA is in it. Where the system
  bundle's directory is also a hashed directory (Debian, Alpine: ``/etc/ssl/certs``), it
  holds a symlink to each of its ``<hash>.<n>`` entries plus our CA
  (:func:`linked_cert_dir`, ~2 ms). Elsewhere every certificate of the combined bundle
  is written as its own PEM file named ``<subject hash>.<n>`` (:func:`hashed_cert_dir`,
  ~50 ms for 150 roots: every subject is parsed and hashed here).
  The hash is OpenSSL's ``X509_NAME_hash_ex`` (what ``openssl x509 -hash`` prints):
  the subject's canonical encoding (each string value as a UTF8String, lower-cased ASCII,
  whitespace trimmed and collapsed; RDN SETs concatenated without the outer SEQUENCE),
  hashed with SHA-1, first four bytes read little-endian. See OpenSSL
  ``crypto/x509/x_name.c`` (``x509_name_canon``, ``asn1_string_canon``).
* The Java trust store is PKCS#12 with password ``changeit`` whose entries carry the
  attribute that makes Java treat them as trusted certificates
  (``serialize_java_truststore``). It holds our CA plus, from :func:`build`, the system
  roots. It is encrypted with the legacy SHA-1/3DES scheme (the one ``keytool`` used until
  2021) so every Java 8+ reads it; it holds public certificates only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

__all__ = [
    "JAVA_TRUSTSTORE_PASSWORD", "SYSTEM_BUNDLE_PATHS", "TRUST_VARIABLES", "TrustFiles",
    "build", "combined_bundle", "environment", "existing_bundle_targets", "hashed_cert_dir",
    "java_options", "java_truststore", "linked_cert_dir", "pem_certificates", "subject_hash",
    "system_bundle", "system_roots",
]

SYSTEM_BUNDLE_PATHS: Final[tuple[str, ...]] = (
    "/etc/ssl/certs/ca-certificates.crt",                  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",                    # Fedora, RHEL
    "/etc/ssl/cert.pem",                                   # Alpine, macOS-style
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",   # Fedora, RHEL (the real file)
    "/etc/ssl/ca-bundle.pem",                              # openSUSE
)

JAVA_TRUSTSTORE_PASSWORD: Final = "changeit"

# Variables naming a PEM bundle; SSL_CERT_DIR, the Java options and HTTPTAP are added apart.
_BUNDLE_VARIABLES: Final = (
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "DENO_CERT",
    "AWS_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT", "CARGO_HTTP_CAINFO",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
)
# One variable only: every JVM prints a "Picked up ..." note for each it reads, and
# _JAVA_OPTIONS is read by all of them (Java 8 and every tool, not just the java launcher
# that reads JDK_JAVA_OPTIONS). A JDK_JAVA_OPTIONS of the user's own is left as it is.
_JAVA_VARIABLES: Final = ("_JAVA_OPTIONS",)

TRUST_VARIABLES: Final[frozenset[str]] = frozenset(
    (*_BUNDLE_VARIABLES, "SSL_CERT_DIR", *_JAVA_VARIABLES, "HTTPTAP"))
"""Every variable :func:`environment` sets (SPEC.md, "Inside the namespace")."""

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n(.+?)-----END CERTIFICATE-----", re.DOTALL)


# ---------------------------------------------------------------------- bundles


def existing_bundle_targets(paths: Iterable[str] = SYSTEM_BUNDLE_PATHS) -> list[str]:
    """The real files behind the bundle paths that exist (symlinks followed), each once."""
    out: list[str] = []
    for path in paths:
        real = os.path.realpath(path)
        if os.path.isfile(real) and real not in out:
            out.append(real)
    return out


def system_bundle(paths: Iterable[str] = SYSTEM_BUNDLE_PATHS) -> tuple[str, bytes] | None:
    """The first readable system bundle: its path and PEM text."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                return path, f.read()
        except OSError:
            continue
    return None


def system_roots(paths: Iterable[str] = SYSTEM_BUNDLE_PATHS) -> bytes:
    """The PEM text of the first readable system bundle, or ``b""`` when there is none."""
    found = system_bundle(paths)
    return found[1] if found else b""


def combined_bundle(ca_pem: bytes, paths: Iterable[str] = SYSTEM_BUNDLE_PATHS) -> bytes:
    """The host's system roots with ``ca_pem`` appended (our CA alone without a system bundle)."""
    roots = system_roots(paths)
    if roots and not roots.endswith(b"\n"):
        roots += b"\n"
    ca = ca_pem if ca_pem.endswith(b"\n") else ca_pem + b"\n"
    if roots:
        return roots + b"\n# httptap: the CA of this run\n" + ca
    return ca


def pem_certificates(bundle: bytes) -> list[bytes]:
    """The DER of each ``CERTIFICATE`` block in a PEM bundle, in order (bad base64 skipped)."""
    out: list[bytes] = []
    for match in _PEM_CERT.finditer(bundle):
        try:
            out.append(base64.b64decode(b"".join(match.group(1).split()), validate=True))
        except binascii.Error:
            continue
    return out


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


# ---------------------------------------------------------------------- subject hash

_TAG_SEQUENCE: Final = 0x30
_TAG_SET: Final = 0x31
_TAG_UTF8: Final = 0x0C
# String types OpenSSL canonicalises (ASN1_MASK_CANON), with how to read them as text.
_CANON_TYPES: Final[dict[int, str]] = {
    0x0C: "utf-8",        # UTF8String
    0x13: "latin-1",      # PrintableString
    0x14: "latin-1",      # T61String (OpenSSL reads it one byte per character)
    0x16: "latin-1",      # IA5String
    0x1A: "latin-1",      # VisibleString
    0x1C: "utf-32-be",    # UniversalString
    0x1E: "utf-16-be",    # BMPString
}
_OSSL_SPACE: Final = b" \t\n\v\f\r"


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _der(tag: int, contents: bytes) -> bytes:
    n = len(contents)
    if n < 0x80:
        return bytes((tag, n)) + contents
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + contents


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, contents start, contents end, element start) of each element in a range."""
    out = []
    pos = start
    while pos < end:
        tag, cstart, cend = _tlv(data, pos)
        out.append((tag, cstart, cend, pos))
        pos = cend
    return out


def _subject_der(cert_der: bytes) -> bytes:
    """The subject Name element, as encoded in the certificate."""
    _, cstart, cend = _tlv(cert_der, 0)                  # Certificate
    _, tstart, tend = _tlv(cert_der, cstart)             # TBSCertificate
    fields = _children(cert_der, tstart, tend)
    if fields and fields[0][0] == 0xA0:                  # [0] version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < 5 or fields[4][0] != _TAG_SEQUENCE:
        raise ValueError("no subject in certificate")
    _, _, send, sstart = fields[4]
    return cert_der[sstart:send]


def _canon_value(tag: int, value: bytes) -> bytes:
    """``asn1_string_canon``: the value's canonical UTF8String element."""
    encoding = _CANON_TYPES.get(tag)
    if encoding is None:
        return _der(tag, value)                          # other types are copied as they are
    text = value.decode(encoding).encode("utf-8")
    text = text.strip(_OSSL_SPACE)
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _OSSL_SPACE:
            out.append(0x20)
            while i < len(text) and text[i] in _OSSL_SPACE:
                i += 1
            continue
        out.append(ch + 0x20 if 0x41 <= ch <= 0x5A else ch)
        i += 1
    return _der(_TAG_UTF8, bytes(out))


def _canonical_name(name_der: bytes) -> bytes:
    _, start, end = _tlv(name_der, 0)
    out = bytearray()
    for set_tag, sstart, send, _ in _children(name_der, start, end):
        if set_tag != _TAG_SET:
            raise ValueError("RDN is not a SET")
        entries = []
        for ava_tag, astart, aend, _ in _children(name_der, sstart, send):
            if ava_tag != _TAG_SEQUENCE:
                raise ValueError("AttributeTypeAndValue is not a SEQUENCE")
            parts = _children(name_der, astart, aend)
            if len(parts) != 2:
                raise ValueError("bad AttributeTypeAndValue")
            (_, _, oend, ostart), (vtag, vstart, vend, _) = parts
            entries.append(_der(_TAG_SEQUENCE, name_der[ostart:oend]
                                + _canon_value(vtag, name_der[vstart:vend])))
        out += _der(_TAG_SET, b"".join(sorted(entries)))  # DER orders SET OF by encoding
    return bytes(out)


def subject_hash(cert_der: bytes) -> int:
    """OpenSSL's subject name hash of a DER certificate (``openssl x509 -hash``).

    Raises ``ValueError`` when the certificate's subject cannot be read.
    """
    try:
        canon = _canonical_name(_subject_der(cert_der))
    except UnicodeError as exc:
        raise ValueError(f"subject string does not decode: {exc}") from exc
    return int.from_bytes(hashlib.sha1(canon).digest()[:4], "little")


def hashed_cert_dir(ca_pem: bytes, directory: str, bundle: bytes | None = None) -> list[str]:
    """Fill ``directory`` as an ``SSL_CERT_DIR``: each certificate as ``<hash>.<n>``.

    The certificates are those of ``bundle`` (default: :func:`combined_bundle` of
    ``ca_pem``), our CA included; each is its own PEM file (mode 0644). Certificates
    whose subject cannot be read are left out. Returns the file names written.
    """
    if bundle is None:
        bundle = combined_bundle(ca_pem)
    ders = pem_certificates(bundle)
    ca_ders = pem_certificates(ca_pem)
    ders += [d for d in ca_ders if d not in ders]
    os.makedirs(directory, mode=0o755, exist_ok=True)
    written: list[str] = []
    used: set[str] = set()
    for der in ders:
        try:
            digest = subject_hash(der)
        except ValueError:
            continue
        n = 0
        while f"{digest:08x}.{n}" in used:
            n += 1
        fname = f"{digest:08x}.{n}"
        used.add(fname)
        path = os.path.join(directory, fname)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(_pem(der))
        written.append(fname)
    return written


_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def linked_cert_dir(ca_pem: bytes, directory: str, host_dir: str) -> list[str] | None:
    """Fill ``directory`` as an ``SSL_CERT_DIR`` from the host's hashed directory: a symlink
    to each of its ``<hash>.<n>`` entries, plus our CA as a file of its own.

    The fast way (about 2 ms against about 50 for :func:`hashed_cert_dir`, which parses
    and hashes every root): the host's directory already carries OpenSSL's names for its
    roots (Debian and Alpine keep it next to the bundle). Returns the names written, or
    ``None`` when ``host_dir`` has no hashed entries (then use :func:`hashed_cert_dir`).
    """
    try:
        names = sorted(n for n in os.listdir(host_dir) if _HASHED_NAME.fullmatch(n))
    except OSError:
        return None
    if not names:
        return None
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for name in names:
        os.symlink(os.path.join(host_dir, name), os.path.join(directory, name))
    used = set(names)
    for der in pem_certificates(ca_pem):
        digest = subject_hash(der)
        n = 0
        while f"{digest:08x}.{n}" in used:
            n += 1
        name = f"{digest:08x}.{n}"
        used.add(name)
        _write(os.path.join(directory, name), _pem(der))
        names.append(name)
    return names


# ---------------------------------------------------------------------- Java


def java_truststore(ca_pem: bytes, extra_roots_pem: bytes = b"") -> bytes:
    """A PKCS#12 trust store (password ``changeit``) trusting ``ca_pem`` and the extra roots.

    Extra roots that do not parse are left out; our CA must parse (``ValueError``).
    """
    entries = [pkcs12.PKCS12Certificate(x509.load_pem_x509_certificate(ca_pem), b"httptap-ca")]
    for i, der in enumerate(pem_certificates(extra_roots_pem)):
        try:
            with warnings.catch_warnings():     # e.g. a root with a non-positive serial
                warnings.simplefilter("ignore")
                cert = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        entries.append(pkcs12.PKCS12Certificate(cert, f"system-{i}".encode()))
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(JAVA_TRUSTSTORE_PASSWORD.encode())
    )
    return pkcs12.serialize_java_truststore(entries, encryption)


def java_options(truststore_path: str) -> str:
    """The JVM options that make Java use the trust store."""
    return (f"-Djavax.net.ssl.trustStore={truststore_path} "
            "-Djavax.net.ssl.trustStoreType=PKCS12 "
            f"-Djavax.net.ssl.trustStorePassword={JAVA_TRUSTSTORE_PASSWORD}")


# ---------------------------------------------------------------------- environment


def environment(bundle_path: str, cert_dir: str, truststore_path: str,
                current: Mapping[str, str]) -> dict[str, str]:
    """The variables to set in the command's environment (exactly :data:`TRUST_VARIABLES`).

    ``current`` is the environment the command would otherwise get: the Java option
    variables keep what it already holds, with ours appended (later options win in Java).
    """
    env = {name: bundle_path for name in _BUNDLE_VARIABLES}
    env["SSL_CERT_DIR"] = cert_dir
    options = java_options(truststore_path)
    for name in _JAVA_VARIABLES:
        before = current.get(name, "").strip()
        env[name] = f"{before} {options}" if before else options
    env["HTTPTAP"] = "1"
    return env


# ---------------------------------------------------------------------- all together


@dataclass(frozen=True, slots=True)
class TrustFiles:
    """The files :func:`build` wrote and the environment that names them."""

    bundle_path: str
    cert_dir: str
    truststore_path: str
    environ: dict[str, str]
    overlay_targets: list[str]


def build(ca_pem: bytes, directory: str, current: Mapping[str, str],
          bundle_paths: Sequence[str] = SYSTEM_BUNDLE_PATHS) -> TrustFiles:
    """Write the bundle, hashed directory and trust store under ``directory``.

    ``directory`` must exist; files are world-readable (the command may run as another
    user), so it should be a private directory of the run that is removed afterwards.
    ``overlay_targets`` are the files to bind-mount the bundle over (unless
    ``--no-overlay``).
    """
    found = system_bundle(bundle_paths)
    roots = found[1] if found else b""
    bundle = combined_bundle(ca_pem, bundle_paths)
    bundle_path = os.path.join(directory, "ca-bundle.crt")
    cert_dir = os.path.join(directory, "certs")
    truststore_path = os.path.join(directory, "truststore.p12")
    _write(bundle_path, bundle)
    # The hashed directory next to the system bundle, if there is one, names the same roots.
    if found is None or linked_cert_dir(ca_pem, cert_dir, os.path.dirname(found[0])) is None:
        hashed_cert_dir(ca_pem, cert_dir, bundle)
    _write(truststore_path, java_truststore(ca_pem, roots))
    return TrustFiles(bundle_path=bundle_path, cert_dir=cert_dir,
                      truststore_path=truststore_path,
                      environ=environment(bundle_path, cert_dir, truststore_path, current),
                      overlay_targets=existing_bundle_targets(bundle_paths))


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
