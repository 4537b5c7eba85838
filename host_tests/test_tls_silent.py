"""TLS clients that connect and say nothing (ringws/tls.py) must hold up no other client:
the firmware under the MicroPython unix port at 110k, real sockets, the real `websockets`
client over wss.

Two kinds of silence: a TCP connection that never sends its ClientHello (a slowloris, or a
browser's speculative socket), and one that shakes hands and then sends no request, which
is what Chromium's preconnect sockets do (its page's wss then waited behind them).
"""
import socket
import ssl

import pytest

from fwrun import Firmware, until
from test_tls_wss import certs, client_ctx  # noqa: F401  (the module's certificate fixture)

HEAP = "110k"
DEADLINE_MS = 3000  # tls_handshake_ms: the cut-offs below are told from it by /stats
WAITING = 3  # tls_waiting: room for the two silent sockets and a client beside them


def start(path, certs, **server):  # noqa: F811
    cfg = {"max_connections": 4, "tls_handshake_ms": DEADLINE_MS, "tls_waiting": WAITING}
    cfg.update(server)
    return Firmware(path, heap=HEAP, certs=certs, server=cfg).start()


@pytest.fixture(scope="module", params=[1, 2], ids=["tls_max1", "tls_max2"])
def fw(request, tmp_path_factory, certs):  # noqa: F811
    f = start(tmp_path_factory.mktemp("tls_silent") / "fw", certs, tls_max=request.param)
    yield f
    f.stop()


def tls(fw):
    return fw.stats()["tls"]


def silent(fw):
    return socket.create_connection(("127.0.0.1", fw.tls_port), timeout=10)


def shaken(fw, certs):  # noqa: F811
    """A client that completes the TLS handshake and sends no request (a preconnect)."""
    return client_ctx(certs).wrap_socket(silent(fw), server_hostname="127.0.0.1")


def closed_by_server(s, timeout=10.0):
    """True once the server closed s (EOF or reset), within timeout."""
    s.settimeout(timeout)
    try:
        return s.recv(100) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


def wss_echo(fw, certs, text):  # noqa: F811
    # (Uncompressed: at 110k, the permessage-deflate code a compressed connection loads
    # stays after it and leaves less than tls_min_free for the next handshake.)
    from websockets.sync.client import connect

    try:
        ws = connect("wss://127.0.0.1:%d/echo" % fw.tls_port, ssl=client_ctx(certs),
                     open_timeout=10, compression=None, legacy=True)
    except Exception as e:  # (what the server counted says why)
        raise AssertionError("wss refused: %r; /stats: %s" % (e, fw.stats())) from e
    st = tls(fw)  # (read while the connection is open)
    with ws:
        ws.send(text)
        assert ws.recv(timeout=5) == text
    return st


def quiet_tls(fw):
    def done():
        st = fw.stats()
        return st["tls"]["active"] == 0 and st["tls"]["waiting"] == 0
    return until(done, 10)


def test_silent_sockets_hold_up_nobody_and_are_cut_at_their_deadline(fw, certs):  # noqa: F811
    before = tls(fw)["failed"]
    quiet = [silent(fw), silent(fw)]
    assert until(lambda: tls(fw)["waiting"] == 2, 5)
    during = wss_echo(fw, certs, "past the silent ones")
    # Opened while both still waited: nobody's deadline had come.
    assert during["waiting"] == 2
    assert during["failed"]["timeout"] == before["timeout"]
    assert during["handshakes"] >= 1
    for s in quiet:
        assert closed_by_server(s)
    after = tls(fw)["failed"]
    assert after["timeout"] == before["timeout"] + 2
    assert after["idle"] == before["idle"]
    assert quiet_tls(fw)


def test_a_preconnect_gives_way(fw, certs):  # noqa: F811
    """A client shaken hands and silent holds a slot: with a free slot beside it the next
    client takes that one; with none, the quiet one is closed (failed.idle) once it has
    been quiet for a fifth of tls_handshake_ms, not at its deadline."""
    st = tls(fw)
    before, handshakes = st["failed"], st["handshakes"]
    pre = shaken(fw, certs)
    assert until(lambda: tls(fw)["active"] == 1, 5)
    during = wss_echo(fw, certs, "past the preconnect")
    assert during["failed"]["timeout"] == before["timeout"]
    assert during["handshakes"] == handshakes + 1  # (the wss's: the preconnect has none)
    if during["max"] == 1:
        assert during["failed"]["idle"] == before["idle"] + 1
        assert closed_by_server(pre, timeout=1)  # (already: it made room for the wss)
    else:
        assert during["failed"]["idle"] == before["idle"]
        assert closed_by_server(pre)
        assert tls(fw)["failed"]["timeout"] == before["timeout"] + 1
    assert quiet_tls(fw)


def test_more_silent_sockets_than_the_waiting_list(fw, certs):  # noqa: F811
    before = tls(fw)["failed"]
    crowd = [silent(fw) for _ in range(WAITING + 2)]
    # The oldest make room for the newest: the list stays full, the rest counted idle.
    assert until(lambda: tls(fw)["failed"]["idle"] == before["idle"] + 2, 5)
    assert tls(fw)["waiting"] == WAITING
    during = wss_echo(fw, certs, "past the crowd")
    assert during["failed"]["idle"] == before["idle"] + 3  # (one more made room for it)
    assert during["failed"]["timeout"] == before["timeout"]
    assert sum(closed_by_server(s) for s in crowd) == len(crowd)
    assert tls(fw)["failed"]["timeout"] == before["timeout"] + WAITING - 1
    assert quiet_tls(fw)
    assert fw.alive()


def test_shutdown_closes_the_waiting_sockets(tmp_path, certs):  # noqa: F811
    f = start(tmp_path / "fw", certs, tls_max=1, shutdown_timeout_ms=4000)
    try:
        # A plain WebSocket that will not answer the server's close holds the shutdown
        # open for shutdown_timeout_ms: the process is still there when the TLS
        # sockets are closed.
        plain = socket.create_connection(("127.0.0.1", f.port), timeout=10)
        plain.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert plain.recv(200).startswith(b"HTTP/1.1 101")
        waiting = [silent(f), silent(f)]
        pre = shaken(f, certs)
        assert until(lambda: f.stats()["tls"]["waiting"] == 2, 5)
        assert f.stats()["tls"]["active"] == 1
        f.proc.stdin.close()  # the stop request (fwrun: what f.stop() sends)
        for s in waiting + [pre]:
            assert closed_by_server(s, timeout=3)
        assert f.alive()  # (closed by the shutdown, not by the process's end)
        plain.close()
        assert until(lambda: not f.alive(), 10)
        assert "Traceback" not in f.log(since_start=True)
    finally:
        f.stop()
