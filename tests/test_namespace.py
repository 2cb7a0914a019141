"""The launcher's pure decisions (httptap.run.namespace), without building a namespace."""

from __future__ import annotations

from httptap.run.config import Config
from httptap.run.namespace import hides_whole_directory, trust_paths

RUN = "/no-such-base/httptap-run-42-abc"  # realpath leaves it as is


def _config(**kw: object) -> Config:
    return Config(command=("true",), **kw)  # type: ignore[arg-type]


def test_trust_paths_are_the_mount_sources_and_the_paths_in_the_environment():
    config = _config(
        trust_mounts=((f"{RUN}/ca-bundle.crt", "/etc/ssl/certs/ca-certificates.crt"),),
        extra_env={"SSL_CERT_FILE": f"{RUN}/ca-bundle.crt", "SSL_CERT_DIR": f"{RUN}/certs",
                   "_JAVA_OPTIONS": f"-Djavax.net.ssl.trustStore={RUN}/trust.p12 "
                                    "-Djavax.net.ssl.trustStoreType=PKCS12",
                   "HTTPTAP": "1"})
    assert sorted(trust_paths(config)) == sorted([
        f"{RUN}/ca-bundle.crt", f"{RUN}/ca-bundle.crt", f"{RUN}/certs", f"{RUN}/trust.p12"])


def test_the_ca_directory_is_covered_whole_unless_it_holds_the_runs_files():
    keep = [f"{RUN}/ca-bundle.crt", f"{RUN}/certs"]
    assert hides_whole_directory("/home/me/.httptap", keep)
    assert hides_whole_directory("/no-such-base/httptap-run-4", keep)  # a prefix, not a parent
    assert not hides_whole_directory("/no-such-base", keep)
    assert not hides_whole_directory("/", keep)
    assert not hides_whole_directory(RUN, keep)
    assert hides_whole_directory("/anything", [])
