"""wss and https (ringws/tls.py) against the real firmware under the MicroPython unix port,
with a certificate made by tools/cert.py and verified by the clients.

The unix port's mbedTLS allocates its buffers with malloc, outside the MicroPython heap (as
the ESP32's does in its IDF heap): the Python heap carries only the SSL objects, so these
tests run at 192k, the judged size for TLS with the host board's 9 plain slots.
"""
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.request

import pytest

from conftest import ROOT
from fwrun import Firmware, until

sys.path.insert(0, os.path.join(ROOT, "tools"))
import cert  # noqa: E402

HEAP = "192k"
SERVER = {"tls_handshake_ms": 1500}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    cert.make("host", ["127.0.0.1"], str(d))
    return d


@pytest.fixture(scope="module")
def fw(tmp_path_factory, certs):
    f = Firmware(tmp_path_factory.mktemp("tls") / "fw", heap=HEAP, server=SERVER,
                 certs=certs).start()
    yield f
    f.stop()


def client_ctx(certs):
    return ssl.create_default_context(cafile=str(certs / "host.pem"))


def wss(fw, certs, path="/echo", timeout=5.0):
    from websockets.sync.client import connect

    return connect("wss://127.0.0.1:%d%s" % (fw.tls_port, path), ssl=client_ctx(certs),
                   open_timeout=timeout, legacy=True)


def https_get(fw, certs, path):
    with urllib.request.urlopen("https://127.0.0.1:%d%s" % (fw.tls_port, path),
                                context=client_ctx(certs), timeout=5) as r:
        return r.status, r.read()


def tls_stats(fw):
    return fw.stats()["tls"]


def settled(fw):
    """No TLS connection left and every plain slot free (the /stats request's own slot
    aside)."""
    def done():
        st = fw.stats()
        return st["tls"]["active"] == 0 and st["slots_free"] >= st["slots_total"] - 1
    return until(done, 10)


def test_wss_echo_verifies_the_certificate(fw, certs):
    before = tls_stats(fw)["handshakes"]
    with wss(fw, certs) as ws:
        for msg in ("hello", b"\x00\xff" * 500, "z" * 70000, b"y" * 20000):
            ws.send(msg)
            assert ws.recv(timeout=10) == msg
    assert tls_stats(fw)["handshakes"] == before + 1
    # A client that does not trust the certificate refuses the server.
    from websockets.sync.client import connect

    with pytest.raises(ssl.SSLCertVerificationError):
        connect("wss://127.0.0.1:%d/echo" % fw.tls_port, ssl=ssl.create_default_context(),
                open_timeout=5)
    assert settled(fw)


def test_https_serves_the_page_and_stats(fw, certs):
    status, body = https_get(fw, certs, "/")
    assert status == 200 and b"<html" in body.lower()
    status, body = https_get(fw, certs, "/stats")
    st = json.loads(body)
    assert status == 200 and st["tls"]["port"] == fw.tls_port
    assert st["tls"]["active"] == 1  # this request
    assert settled(fw)


class Echoer(threading.Thread):
    """A plain ws client echoing as fast as it can until stopped."""

    def __init__(self, fw):
        threading.Thread.__init__(self, daemon=True)
        self.ws = fw.ws("/echo")
        self.count = 0
        self.error = None
        self.stop = False

    def run(self):
        try:
            while not self.stop:
                self.ws.send(b"plain %d" % self.count)
                assert self.ws.recv(timeout=5) == b"plain %d" % self.count
                self.count += 1
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.ws.close()


def test_budget_one_over_tls_max_refused_while_plain_ws_echo(fw, certs):
    # Every WebSocket the plain slots admit (all but the one kept for HTTP).
    plain = [Echoer(fw) for _ in range(fw.stats()["slots_total"] - 1)]
    for p in plain:
        p.start()
    tls = []
    try:
        assert until(lambda: all(p.count > 3 for p in plain), 10)
        limit = tls_stats(fw)["max"]
        tls.append(wss(fw, certs))
        status, body = https_get(fw, certs, "/")  # the page, beside a wss and 8 ws
        assert status == 200 and b"<html" in body.lower()
        while len(tls) < limit:
            tls.append(wss(fw, certs))
        refused = tls_stats(fw)["refused"]["busy"]
        with pytest.raises((ssl.SSLError, ConnectionError)):
            wss(fw, certs).close()
        assert tls_stats(fw)["refused"]["busy"] == refused + 1
        counts = [p.count for p in plain]
        for i, ws in enumerate(tls):
            ws.send("tls %d" % i)
            assert ws.recv(timeout=5) == "tls %d" % i
        assert until(lambda: all(p.count > c + 3 for p, c in zip(plain, counts)), 10)
        assert [p.error for p in plain] == [None] * len(plain)
    finally:
        for ws in tls:
            ws.close()
        for p in plain:
            p.stop = True
        for p in plain:
            p.join(10)
    assert settled(fw)
    with wss(fw, certs) as ws:  # the slots came back
        ws.send("again")
        assert ws.recv(timeout=5) == "again"


def raw_conn(fw):
    s = socket.create_connection(("127.0.0.1", fw.tls_port), timeout=5)
    return s


def read_until_closed(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data
    finally:
        s.close()


def ssl3_hello():
    """A ClientHello that offers SSL 3.0 only (OpenSSL no longer makes one)."""
    body = b"\x03\x00" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x00" + len(hs).to_bytes(2, "big") + hs


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")  # (on purpose)
def test_hostile_tls_cut_off_and_counted(fw, certs):
    fds = fw.fds()
    st = fw.stats()
    before, mem_before = st["tls"]["failed"], st["mem_free"]
    # Plain HTTP to the TLS port: a 400 that says so.
    s = raw_conn(fw)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 400") and b"speaks TLS" in answer
    # Garbage.
    s = raw_conn(fw)
    s.sendall(os.urandom(700))
    read_until_closed(s)
    # Old protocol versions: SSL 3.0 by hand, TLS 1.0 by OpenSSL.
    s = raw_conn(fw)
    s.sendall(ssl3_hello())
    assert read_until_closed(s)[:1] in (b"\x15", b"")  # an alert, or closed
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        old.wrap_socket(raw_conn(fw)).close()
    # A stall mid-handshake: a record header and then nothing. It holds a TLS slot until
    # it is cut off; a good client meanwhile shakes hands on another.
    stall = raw_conn(fw)
    stall.sendall(b"\x16\x03\x01\x02\x00\x01")
    assert until(lambda: tls_stats(fw)["active"] == 1, 5)
    with wss(fw, certs, timeout=10) as ws:
        ws.send("after")
        assert ws.recv(timeout=5) == "after"
    assert read_until_closed(stall) == b""
    after = tls_stats(fw)["failed"]
    assert after["not_tls"] == before["not_tls"] + 2
    assert after["version"] == before["version"] + 2
    assert after["timeout"] == before["timeout"] + 1
    assert settled(fw)
    assert until(lambda: fw.fds() <= fds, 5), (fds, fw.fds())
    assert fw.alive()
    # The memory came back: 6 hostile connections and a good one, each SSL socket about
    # 1.1 KB of this heap, none left behind (the margin: the asyncio queues' own growth).
    mem_after = fw.stats()["mem_free"]
    assert mem_after >= mem_before - 1024, (mem_before, mem_after)


def test_short_of_memory_refused_cleanly(tmp_path, certs):
    f = Firmware(tmp_path / "fw", heap=HEAP, certs=certs,
                 server=dict(SERVER, tls_min_free=16 * 1024 * 1024)).start()
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            wss(f, certs).close()
        st = f.stats()
        assert st["tls"]["refused"]["memory"] == 1 and st["tls"]["handshakes"] == 0
        with f.ws("/echo") as ws:  # plain ws unaffected
            ws.send("plain")
            assert ws.recv(timeout=5) == "plain"
    finally:
        f.stop()


def test_wss_echo_intact_when_the_socket_pushes_back(fw, certs):
    """A client that reads nothing for a while: the server's TLS writes are told to wait
    (mbedTLS keeps the record it made) and are retried as the ring fills further; every
    echo must still come back whole and in order (tls.TlsRing)."""
    import random

    from websockets.sync.client import connect

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", fw.tls_port))
    rnd = random.Random(7)
    msgs = [rnd.randbytes(rnd.randrange(1, 3000)) for _ in range(400)]
    # (Uncompressed: with permessage-deflate these 400 messages, up to 3 KB of noise, come
    # back in 512-byte inflated pieces and take about 19 s, against the client's 20 s
    # keepalive; 4 s without.)
    with connect("wss://127.0.0.1:%d/echo" % fw.tls_port, ssl=client_ctx(certs), sock=s,
                 server_hostname="127.0.0.1", open_timeout=5, max_queue=None,
                 compression=None) as ws:
        sender = threading.Thread(target=lambda: [ws.send(m) for m in msgs], daemon=True)
        sender.start()
        time.sleep(1.0)  # nothing read: the server's socket fills and pushes back
        for i, m in enumerate(msgs):
            assert ws.recv(timeout=10) == m, i
        sender.join(10)
    assert settled(fw)
