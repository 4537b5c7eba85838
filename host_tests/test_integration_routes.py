"""What an application adds through the public API, end to end under the MicroPython unix
port (110 KiB heap): a WebSocket route with subprotocols (negotiated with the real
`websockets` client), custom `srv.http` routes, plain-HTTP 405 and HEAD, and the start-up
budget line. The routes come from host_tests/routes_main.py, run instead of main.py."""
import gzip
import json
import os
import re

import pytest
from websockets.sync.client import connect

from conftest import ROOT
from fwrun import Firmware
from wspeer import connect as raw_connect
from wspeer import parse_response, read_all, ws_request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    # Without permessage-deflate's pool (4.4 KB at start-up): at 110k the /json route's
    # answer does not fit beside it until the start-up code shrinks.
    f = Firmware(tmp_path_factory.mktemp("routes") / "fw", server={"inflaters": 0},
                 entry=os.path.join(ROOT, "host_tests", "routes_main.py")).start()
    yield f
    f.stop()
    assert "Traceback" not in f.log(tail=None), f.log()


def proto(fw, offer):
    """(negotiated subprotocol, the reply to "hi") on /proto offering `offer`."""
    with connect(fw.ws_url("/proto"), subprotocols=offer or None, open_timeout=5) as ws:
        ws.send("hi")
        return ws.subprotocol, ws.recv(5)


def test_subprotocol_negotiated_end_to_end(fw):
    # The server's preference order wins (chat.v2 first), whatever order the client offers.
    assert proto(fw, ["chat.v1", "chat.v2"]) == ("chat.v2", "chat.v2:hi")
    assert proto(fw, ["chat.v1"]) == ("chat.v1", "chat.v1:hi")
    assert proto(fw, ["other", "chat.v1"]) == ("chat.v1", "chat.v1:hi")
    # Nothing in common, or nothing offered: no subprotocol, and the handler sees None.
    assert proto(fw, ["other"]) == (None, "None:hi")
    assert proto(fw, []) == (None, "None:hi")


def test_subprotocol_header_in_the_101(fw):
    s = raw_connect(fw.port)
    s.sendall(ws_request("/proto", headers={"Sec-WebSocket-Protocol": "x, chat.v1"}))
    head = s.recv(4096)
    s.close()
    assert head.startswith(b"HTTP/1.1 101"), head
    assert re.findall(rb"(?i)\r\nsec-websocket-protocol: *([^\r]*)", head) == [b"chat.v1"]


def request(fw, method, path, headers=None):
    return fw.get(path, headers, method=method)


def test_custom_http_routes(fw):
    status, headers, body = fw.get("/hello?world")
    assert (status, body) == (200, b"hello world")
    assert headers["Content-Type"].startswith("text/plain")
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Cache-Control"] == "no-store"
    assert fw.get("/hello")[2] == b"hello nobody"
    # A body given as a list of bytes-likes goes out piece after piece, with its status.
    status, headers, body = fw.get("/pieces")
    assert (status, body) == (201, b"one,two,three")
    assert int(headers["Content-Length"]) == 13
    # A jsonout.Reader body: JSON larger than the receive buffer, read in chunks.
    status, headers, body = fw.get("/json?q")
    assert (status, json.loads(body)) == (200, {"query": "q", "n": list(range(200))})
    assert int(headers["Content-Length"]) == len(body) > 700
    # Routes match the path exactly.
    assert fw.get("/hello/more")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/stats", "/hello", "/nothing"])
def test_methods_other_than_get_and_head_get_405(fw, method, path):
    status, headers, body = request(fw, method, path)
    assert status == 405, (status, body)
    assert headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/", "/hello?x", "/pieces", "/json", "/stats"])
def test_head_has_the_get_headers_and_no_body(fw, path):
    # Read to EOF: a body after a HEAD answer would show up here.
    s = raw_connect(fw.port)
    s.sendall(("HEAD %s HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
               % path).encode())
    status, head_headers, rest = parse_response(read_all(s, 5))
    s.close()
    assert status in (200, 201) and rest == b"", (status, rest[:100])
    status_get, get_headers, body = fw.get(path, {"Accept-Encoding": "gzip"})
    assert status_get == status
    for name in ("Content-Type", "Content-Encoding"):
        assert head_headers.get(name) == get_headers.get(name), name
    if path != "/stats":  # /stats changes between two requests
        assert int(head_headers["Content-Length"]) == len(body)
    if path == "/":
        with open(os.path.join(ROOT, "firmware", "www", "index.html"), "rb") as f:
            assert gzip.decompress(body) == f.read()


BUDGET = re.compile(r"ringws: (\d+) slots x (\d+) B \(recv (\d+) \+ ring (\d+) \+ message "
                    r"(\d+)\) \+ shared recv (\d+) = (\d+) B budgeted")


def test_startup_budget_line_matches_the_sizing_and_the_arena(fw):
    import boards

    log = fw.log(tail=None)
    m = BUDGET.search(log)
    assert m, log
    n, slot, recv, ring, msg, shared, total = (int(x) for x in m.groups())
    # The sizing: the host board's file, as built into config.json.
    want = boards.load("host")["server"]
    cfg = fw.config["server"]
    assert (n, recv, ring, msg, shared) == (
        cfg["max_connections"], cfg["recv_buf"], cfg["send_ring"], cfg["max_message"],
        cfg["shared_recv"]) == (want["max_connections"], want["recv_buf"], want["send_ring"],
                                want["max_message"], want["shared_recv"])
    assert slot == recv + ring + msg and total == n * slot + shared
    # The arena: what the slots' buffers and the shared buffer really are.
    arena = re.search(r"ringws-test: arena (\d+) slots, blocks (\d+) B, shared (\d+) B", log)
    assert arena, log
    assert (int(arena.group(1)), int(arena.group(2)), int(arena.group(3))) == (
        n, n * slot, shared)
    st = fw.stats()
    assert (st["slots_total"], st["slot_bytes"]) == (n, slot)
    # The heap line after start-up counts the arena among what is allocated.
    heap = re.search(r"ringws: heap free (\d+) alloc (\d+) after start-up", log)
    assert heap and int(heap.group(2)) > total, log
