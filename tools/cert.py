#!/usr/bin/env python3
"""Make a board's TLS key and self-signed certificate (EC P-256).

    tools/cert.py --board host --host 127.0.0.1
    tools/cert.py --board esp32 --host ringws.local --host 192.168.1.40

Writes certs/<board>.pem (certificate) and certs/<board>-key.pem (key), both git-ignored.
Every --host goes into subjectAltName (an IP address as an IP entry, a name as a DNS entry;
"localhost" and the board name's ".local" are added for names). tools/build.py converts
both to DER (tls/cert.der, tls/key.der) in the firmware tree: the board parses DER without
base64 and PEM text. EC, because an RSA handshake takes seconds on an ESP32.
"""
import argparse
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CERTS = os.path.join(ROOT, "certs")
DAYS = 825  # the longest validity Apple's browsers accept for a server certificate


def paths(board, certs=CERTS):
    return os.path.join(certs, board + ".pem"), os.path.join(certs, board + "-key.pem")


def san_entries(hosts):
    out = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def make(board, hosts, certs=CERTS, days=DAYS):
    """Write the key and certificate; returns their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ringws " + board)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
        # Its own CA: a browser or client that trusts this certificate trusts the board.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(certs, exist_ok=True)
    cert_path, key_path = paths(board, certs)
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def der_pair(board, certs=CERTS):
    """(certificate DER, key DER) of a board, or None when it has no certificate."""
    cert_path, key_path = paths(board, certs)
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return None
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    # SEC1 ("EC PRIVATE KEY") DER: the form mbedTLS parses with the least code.
    return (cert.public_bytes(serialization.Encoding.DER),
            key.private_bytes(serialization.Encoding.DER,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


def host_list(given):
    hosts = []
    for h in given:
        for part in h.replace(",", " ").split():
            if part not in hosts:
                hosts.append(part)
    for h in list(hosts):
        try:
            ipaddress.ip_address(h)
        except ValueError:
            if h != "localhost" and "localhost" not in hosts:
                hosts.append("localhost")
    return hosts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True)
    ap.add_argument("--host", action="append", required=True,
                    help="a name or IP address of the board (repeat, or comma-separated)")
    ap.add_argument("--out", default=CERTS, help="directory (default certs/)")
    ap.add_argument("--days", type=int, default=DAYS)
    args = ap.parse_args(argv)
    hosts = host_list(args.host)
    cert_path, key_path = make(args.board, hosts, args.out, args.days)
    print("wrote %s and %s (EC P-256, subjectAltName %s, %d days)"
          % (os.path.relpath(cert_path), os.path.relpath(key_path), ", ".join(hosts), args.days))


if __name__ == "__main__":
    main()
