"""tls.TlsRing against mbedTLS's rule for a write told to wait (the socket is full): the
record it made stays pending, and the next write returns the length it is given, however
many bytes that write asked for. A ring that asks for more on the retry (it filled
meanwhile) loses the difference; TlsRing asks for the same length until it is consumed.
Real mbedTLS (the unix port's ssl) and a Python client that reads nothing for a while."""
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from fwrun import free_port, micropython

sys.path.insert(0, os.path.join(ROOT, "tools"))
import build  # noqa: E402
import cert  # noqa: E402

TOTAL = 2_000_000  # beyond what the socket buffers hold (the server sends with 4 KiB)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    d = tmp_path_factory.mktemp("tlsring")
    cert.make("host", ["127.0.0.1"], str(d / "certs"))
    build.build("host", str(d / "fw"), certs=str(d / "certs"))
    return d


def run(tree, kind):
    port = free_port()
    env = dict(os.environ, MICROPYPATH=str(tree / "fw") + ":.frozen")
    proc = subprocess.Popen([micropython(), "-X", "heapsize=192k",
                             os.path.join(ROOT, "host_tests", "tls_ring_main.py"), str(port),
                             str(tree / "fw" / "tls" / "cert.der"),
                             str(tree / "fw" / "tls" / "key.der"), kind, str(TOTAL)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(tree / "certs" / "host.pem"))
        t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        t.sendall(b"G")
        time.sleep(1.0)  # read nothing: the server's writes are told to wait
        t.settimeout(5)
        data = bytearray()
        end = time.monotonic() + 10
        try:
            while time.monotonic() < end:
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (OSError, ssl.SSLError) as e:  # (a broken stream: what the plain ring makes)
            data += b"<%r>" % e
    finally:
        proc.kill()
    return bytes(data), proc.communicate(timeout=10)[0]


def expected():
    pat = bytes(range(251)) * (TOTAL // 251 + 1)
    return pat[:TOTAL]


def test_tls_ring_keeps_every_byte_across_pushbacks(tree):
    data, out = run(tree, "tls")
    assert "pushbacks" in out and " pushbacks 0" not in out, out
    assert len(data) == TOTAL and data == expected()


def test_a_plain_ring_would_lose_bytes(tree):
    # The same server with the plain ring: the retry asks for more than the pending
    # record, mbedTLS says all of it went, and the difference is lost.
    data, out = run(tree, "plain")
    assert " pushbacks 0" not in out, out
    assert len(data) < TOTAL and data != expected()
