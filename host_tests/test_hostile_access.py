"""Access control (firmware/ringws/access.py): Origin allowlist and bearer token.

Unit tests of the checker on CPython, then the firmware under the unix port with an
`access` section in config.json: refused requests get 403/401 at once and give their slot
back as soon as the answer is out.
"""
import time

import pytest

from conftest import FAST, assert_baseline
from fwrun import Firmware
from wspeer import connect, parse_response, read_all, ws_request
from ringws.access import checker, query_param, same, unquote
from ringws.handshake import HttpError, Request

TOKEN = "s3cr3t-t0ken"
ORIGIN = "http://ringws.local"


def req(path="/echo", headers=None):
    h = {k.lower(): v for k, v in (headers or {}).items()}
    return Request("GET", path, "HTTP/1.1", h)


def status_of(check, r, ws):
    try:
        check(r, ws)
    except HttpError as e:
        return e.status, dict(e.headers)
    return None, {}


def test_nothing_configured_means_no_checker():
    assert checker(None) is None
    assert checker({}) is None
    assert checker({"origins": [], "token": ""}) is None


def test_origin_allowlist_on_websocket_paths_only():
    check = checker({"origins": [ORIGIN + "/", "http://192.168.1.20"]})
    assert status_of(check, req(headers={"Origin": ORIGIN}), True)[0] is None
    assert status_of(check, req(headers={"Origin": "HTTP://RINGWS.LOCAL"}), True)[0] is None
    assert status_of(check, req(headers={"Origin": "http://evil.example"}), True)[0] == 403
    assert status_of(check, req(headers={"Origin": "null"}), True)[0] == 403
    assert status_of(check, req(headers={"Origin": ORIGIN + ".evil"}), True)[0] == 403
    # Plain HTTP (the page, /stats) is not origin-checked: browsers send no Origin on GET.
    assert status_of(check, req("/", {"Origin": "http://evil.example"}), False)[0] is None
    # No Origin: a non-browser client; allowed unless configured otherwise.
    assert status_of(check, req(), True)[0] is None
    strict = checker({"origins": [ORIGIN], "allow_no_origin": False})
    assert status_of(strict, req(), True)[0] == 403


def test_token_from_header_or_query_on_websocket_and_stats():
    check = checker({"token": TOKEN})
    for ws, path in ((True, "/echo"), (False, "/stats")):
        st, headers = status_of(check, req(path), ws)
        assert st == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert status_of(check, req(path, {"Authorization": "Bearer " + TOKEN}), ws)[0] is None
        assert status_of(check, req(path, {"Authorization": "bearer  " + TOKEN}), ws)[0] is None
        assert status_of(check, req(path + "?a=1&token=" + TOKEN), ws)[0] is None
        for bad in ("Bearer " + TOKEN + "x", "Bearer " + TOKEN[:-1], "Basic " + TOKEN, "Bearer"):
            assert status_of(check, req(path, {"Authorization": bad}), ws)[0] == 401, bad
        for q in ("?token=", "?token=" + TOKEN[:-1], "?tokens=" + TOKEN, "?xtoken=" + TOKEN):
            assert status_of(check, req(path + q), ws)[0] == 401, q
    assert status_of(check, req("/"), False)[0] is None  # the page itself stays public
    assert status_of(check, req("/stats2"), False)[0] is None


def test_origin_and_token_together():
    check = checker({"origins": [ORIGIN], "token": TOKEN, "protect": []})
    good = {"Origin": ORIGIN, "Authorization": "Bearer " + TOKEN}
    assert status_of(check, req("/echo", good), True)[0] is None
    assert status_of(check, req("/echo", {"Origin": ORIGIN}), True)[0] == 401
    assert status_of(check, req("/echo", {"Origin": "http://x", "Authorization": "Bearer " + TOKEN}), True)[0] == 403
    assert status_of(check, req("/stats"), False)[0] is None  # protect: [] leaves it open


def test_query_and_compare_helpers():
    assert query_param("a=1&token=x%2By+z", "token") == "x+y z"
    assert query_param("token", "token") is None
    assert query_param("", "token") is None
    assert unquote("%zz%4") == "%zz%4"
    assert unquote("%ff") is None  # not UTF-8: never equal to a configured token
    assert same(b"abc", b"abc") and not same(b"abc", b"abd") and not same(b"ab", b"abc")
    assert not same(b"", b"a") and same(b"", b"")


# -- the firmware with access configured ----------------------------------------------------

@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("access") / "fw",
                 server=dict(FAST, max_connections=3, ping_interval_ms=0),
                 config={"access": {"origins": [ORIGIN], "token": TOKEN}}).start()
    yield f
    f.stop()


def ask(fw, data):
    t0 = time.monotonic()
    s = connect(fw.port)
    s.sendall(data)
    got = read_all(s, 3)
    s.close()
    return parse_response(got), time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_firmware_refuses_without_holding_a_slot(fw):
    auth = {"Authorization": "Bearer " + TOKEN}
    base = fw.resources()
    (st, hd, _), took = ask(fw, ws_request("/echo"))
    assert st == 401 and hd["www-authenticate"] == "Bearer"
    assert took < 1, "the refusal waited for something"
    (st, _, _), _ = ask(fw, ws_request("/echo", headers=dict(auth, Origin="http://evil")))
    assert st == 403
    (st, _, _), _ = ask(fw, ws_request("/echo?token=wrong", headers={"Origin": ORIGIN}))
    assert st == 401
    (st, _, _), _ = ask(fw, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 401
    (st, _, body), _ = ask(fw, b"GET /stats?token=%s HTTP/1.1\r\nHost: x\r\n\r\n" % TOKEN.encode())
    assert st == 200 and b"slots_free" in body
    (st, _, _), _ = ask(fw, ws_request("/echo?token=" + TOKEN, headers={"Origin": ORIGIN}))
    assert st == 101
    # Many refusals in a row: each slot comes back at once, none is ever missing.
    for _ in range(30):
        (st, _, _), _ = ask(fw, ws_request("/echo", headers={"Origin": "http://evil"}))
        assert st == 403
    assert_baseline(fw, base)
    assert fw.alive()


@pytest.mark.slow
def test_firmware_serves_the_authorised_websocket_client(fw):
    from websockets.sync.client import connect as ws_connect

    url = "ws://127.0.0.1:%d/echo?token=%s" % (fw.port, TOKEN)
    with ws_connect(url, origin=ORIGIN) as ws:
        ws.send("authorised")
        assert ws.recv(5) == "authorised"
    with pytest.raises(Exception) as exc:
        with ws_connect("ws://127.0.0.1:%d/echo" % fw.port, origin=ORIGIN):
            pass
    assert "401" in str(exc.value)
