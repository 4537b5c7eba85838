"""make cert (tools/cert.py), the TLS part of the build (tools/build.py add_tls), the board
check for TLS sockets (tools/boards.py check_tls) and the TLS settings (ringws.config), on
CPython."""
import ipaddress
import json
import os
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import boards  # noqa: E402
import build  # noqa: E402
import cert  # noqa: E402


def test_cert_is_ec_p256_self_signed_with_the_names(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "cert.py"), "--board",
                          "b1", "--host", "ringws.local,192.168.1.40", "--out", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "b1.pem" in out
    with open(tmp_path / "b1.pem", "rb") as f:
        c = x509.load_pem_x509_certificate(f.read())
    key = c.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ringws.local", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.40")]
    assert c.issuer == c.subject
    c.verify_directly_issued_by(c)
    assert oct(os.stat(tmp_path / "b1-key.pem").st_mode & 0o777) == "0o600"


def test_build_deploys_der_only_with_a_certificate(tmp_path):
    certs = tmp_path / "certs"
    cert.make("host", ["127.0.0.1"], str(certs))
    with_tls = build.build("host", str(tmp_path / "a"), overrides={"port": 9000},
                           certs=str(certs))
    assert with_tls["server"]["tls_port"] == 9001 and with_tls["server"]["tls_max"] >= 1
    der_cert, der_key = cert.der_pair("host", str(certs))
    with open(tmp_path / "a" / "tls" / "cert.der", "rb") as f:
        assert f.read() == der_cert
    x509.load_der_x509_certificate(der_cert)
    without = build.build("host", str(tmp_path / "b"), overrides={"port": 9000})
    assert not [k for k in without["server"] if k.startswith("tls_")]
    assert not os.path.exists(tmp_path / "b" / "tls")
    with open(tmp_path / "b" / "config.json") as f:
        assert "tls_" not in f.read()
    # A board without its own certificate gets none.
    other = build.build("esp32", str(tmp_path / "c"), certs=str(certs))
    assert "tls_port" not in other["server"]


def test_board_check_counts_the_tls_sockets():
    esp32 = boards.load("esp32")
    # (Beside the TLS connections, 2 accepted sockets may wait for their hello.)
    room = (esp32["lwip_sockets"] - boards.SOCKETS_RESERVED - 1 - esp32["server"]["tls_max"]
            - 2)
    assert room < esp32["server"]["max_connections"]
    with pytest.raises(boards.BoardError, match="lower server.max_connections to %d" % room):
        boards.check_tls(esp32, esp32["server"])
    boards.check_tls(esp32, dict(esp32["server"], max_connections=room))
    boards.check_tls(esp32, dict(esp32["server"], max_connections=room + 1, tls_waiting=1))
    host = boards.load("host")
    boards.check_tls(host, host["server"])  # the unix port has no lwIP
    assert esp32["server"]["tls_max"] == 1
    assert boards.load("esp32-spiram")["server"]["tls_max"] == 8


def test_tls_settings_only_with_a_tls_port():
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    from ringws.config import server_config

    cfg = server_config({"port": 80, "tls_port": 443})
    assert cfg["tls_max"] == 1 and cfg["tls_cert"] == "tls/cert.der"
    assert "tls_port" not in server_config({"port": 80})
    with pytest.raises(ValueError, match="unknown server setting: tls_bogus"):
        server_config({"tls_port": 443, "tls_bogus": 1})
    with pytest.raises(ValueError, match="tls_port must differ"):
        server_config({"port": 443, "tls_port": 443})
    with pytest.raises(ValueError, match="unknown server setting: tls_max"):
        server_config({"tls_max": 2})  # (build.py never writes TLS settings without a port)
    assert json.dumps(cfg)
