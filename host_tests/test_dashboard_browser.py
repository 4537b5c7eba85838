"""The dashboard in headless Chromium (Debian's, driven by Playwright) against the firmware
under the MicroPython unix port with a 110 KiB heap.

Every figure on the page keeps its raw value in a data-v attribute next to the text made
for people; the tests read those and compare them with /stats.
"""
import json
import os
import re
import shutil
import time

import pytest

from conftest import ROOT
from fwrun import Firmware, until

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PERIOD = 200
# The host board's sizing with fewer slots and room for a 200-character chat line; the
# heap stays the ESP32's.
SERVER = {"max_connections": 6, "max_message": 256}
WAIT = 10_000  # ms, for anything the page should show
# ms, for the page to be live again after the firmware restarts: its reconnect backoff
# doubles up to 8 s (plus a quarter of jitter) while the server is down, so on a loaded
# machine the next try may come 10 s after the server is back.
RECONNECT = WAIT + 15_000


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("dash_browser") / "fw", server=SERVER,
                 config={"app": {"telemetry_ms": PERIOD}}).start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail("no %s: run `.venv/bin/python tools/setup_test_deps.py` (make test does)"
                    % CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=FLAGS, viewport={"width": 900, "height": 620})
        yield ctx
        ctx.close()


@pytest.fixture
def page_of(fw, browser):
    """Open the dashboard in new tabs; close them after the test."""
    pages = []

    def open_page():
        pg = browser.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        pg.goto(fw.url("/"))
        wait_live(pg)
        pages.append(pg)
        return pg

    yield open_page
    for pg in pages:
        assert pg.errors == [], pg.errors
        pg.close()


def wait_live(pg, timeout=WAIT):
    pg.wait_for_function("document.getElementById('st').textContent == 'live'",
                         timeout=timeout)


def fig(pg, fid):
    return pg.eval_on_selector("#" + fid, "e => e.dataset.v")


# The figures' (raw value, text) by id, and the chart's history, read in one go: a sample
# arriving between two separate reads would pair one sample's figures with the next one's.
# (With RECORD installed, the last two samples the page took its rates from, too.)
SNAPSHOT = """ids => [Object.fromEntries(ids.map(i => {
  const e = document.getElementById(i);
  return [i, [e.dataset.v, e.textContent]];
})), hist, (window.samples || []).slice(-2)]"""
# Keeps every sample the page's stats() gets (the message handler calls it by name).
RECORD = """() => { window.samples = []; const page = stats;
  stats = s => { samples.push(s); page(s); }; }"""


def figs(pg, *ids):
    """({id: (raw value, text)}, heap history) of the page at one moment."""
    got, hist, _ = pg.evaluate(SNAPSHOT, list(ids))
    return {k: tuple(v) for k, v in got.items()}, hist


def wait_sample_after(pg, uptime_ms):
    """Wait until the page shows a sample taken after uptime_ms (device clock)."""
    pg.wait_for_function("t => +document.getElementById('up').dataset.v > t", arg=uptime_ms,
                         timeout=WAIT)


def test_reload_with_the_boards_own_sizing(browser, tmp_path):
    # Chromium's conditional request head (If-None-Match) is about 700 bytes: more than a
    # small recv_buf, which once answered the reload with 431.
    f = Firmware(tmp_path / "fw", config={"app": {"telemetry_ms": PERIOD}}).start()
    try:
        pg = browser.new_page()
        for _ in range(2):  # the second load revalidates: If-None-Match, a longer head
            r = pg.goto(f.url("/"))
            assert r.status in (200, 304), (r.status, r.text())
            wait_live(pg)
        pg.close()
        # Nothing but the two pages over HTTP: the page's empty icon keeps the browser
        # from opening one more connection for /favicon.ico (a 404) in a page load.
        # Each /stats request counts itself once it has ended, so the polls are subtracted.
        polls = [0]

        def http_closed():
            st = f.stats()
            polls[0] += 1
            n = st["closed"]["http"] - (polls[0] - 1)
            return n if n >= 2 else None

        assert until(http_closed, 5) == 2
    finally:
        f.stop()


def test_figures_match_stats(fw, page_of):
    pg = page_of()
    pg.evaluate(RECORD)
    # Two samples are needed for the rates.
    pg.wait_for_function("samples.length >= 2", timeout=WAIT)
    s1 = fw.stats()
    wait_sample_after(pg, s1["uptime_ms"])
    got, _, (a, b) = pg.evaluate(SNAPSHOT, ["up", "heap", "conns", "drop", "mps", "bps",
                                            "rst", "rssi"])
    up, heap, conns, drop, mps, bps, rst = (
        got[k][0] for k in ("up", "heap", "conns", "drop", "mps", "bps", "rst"))
    s2 = fw.stats()
    assert s1["uptime_ms"] < int(up) <= s2["uptime_ms"]
    assert s1["dropped"] <= int(drop) <= s2["dropped"]
    # The page's tab is the only WebSocket; /stats counts the same way both times.
    assert s1["connections"] <= int(conns) <= s2["connections"] + 1
    assert s2["connections"] >= 1
    # Free heap after gc.collect(): same heap, a few hundred ms apart.
    assert abs(int(heap) - s2["mem_free"]) < 8 * 1024, (heap, s2["mem_free"])
    # The rates: the counters' change between the last two samples over the device's
    # time between them (as long as a loaded machine made it), telemetry at least.
    dt = (b["uptime_ms"] - a["uptime_ms"]) / 1000
    msgs = b["messages_in"] + b["messages_out"] - a["messages_in"] - a["messages_out"]
    octets = b["bytes_in"] + b["bytes_out"] - a["bytes_in"] - a["bytes_out"]
    assert msgs >= 1 and octets > 0, (a, b)  # (the sample before b, at least)
    assert abs(float(mps) - msgs / dt) <= 0.051, (mps, a, b)
    assert abs(int(bps) - octets / dt) <= 0.51, (bps, a, b)
    board = s2.get("board") or {}
    assert rst == str(board.get("reset_cause") or board.get("reset") or "")
    rssi = board.get("rssi")
    assert got["rssi"][1] == (
        "%s dBm" % rssi if rssi is not None else board.get("wifi") or "n/a")
    # What people read matches the raw figures (of the same sample).
    assert got["conns"][1] == "%s / %d" % (conns, s2["slots_total"])
    assert got["heap"][1] == "%.1f KiB" % (int(heap) / 1024)
    assert re.fullmatch(r"(\d+m )?\d+s", got["up"][1])


def test_round_trip_is_shown(fw, page_of):
    # The board pings each tab every telemetry tick; the page shows its own round trip
    # and the list of every tab's.
    a, b = page_of(), page_of()
    for pg in (a, b):
        pg.wait_for_function("document.getElementById('rtt').dataset.v !== ''", timeout=WAIT)
        ms, text = pg.eval_on_selector("#rtt", "e => [e.dataset.v, e.textContent]")
        assert 0 <= int(ms) < 2000 and text == ms + " ms", (ms, text)
    # Every tab's list, each read where it was waited for (one tab's page may show the
    # next sample before the other's does).
    for pg in (a, b):
        rtts = pg.wait_for_function(
            "() => { const t = document.getElementById('rtts').textContent;"
            " return t.split('#').length > 2 && t; }", timeout=WAIT).json_value()
        assert re.fullmatch(r"(#\d+ \d+ ms)( · #\d+ \d+ ms)+", rtts), rtts


def server_led(fw):
    with fw.ws("/ws") as ws:
        return json.loads(ws.recv(timeout=5))["led"]  # the hello carries the pin's state


def wait_led(pg, on):
    pg.wait_for_function("v => document.getElementById('led').dataset.v == v",
                         arg="true" if on else "false", timeout=WAIT)


def test_click_toggles_the_led_on_every_page(fw, page_of):
    a, b = page_of(), page_of()
    start = server_led(fw)
    wait_led(a, start), wait_led(b, start)
    for want in (not start, start):
        a.click("#led")
        wait_led(a, want), wait_led(b, want)
        assert a.text_content("#led") == ("LED on" if want else "LED off")
        assert server_led(fw) is want


def test_message_typed_in_one_tab_appears_in_another(page_of):
    a, b = page_of(), page_of()
    text = "hello from tab A \u2603 %d" % time.monotonic_ns()
    a.fill("#msg", text)
    a.press("#msg", "Enter")
    for pg in (b, a):
        pg.wait_for_function("t => document.getElementById('log').textContent.includes(t)",
                             arg=text, timeout=WAIT)
    assert a.input_value("#msg") == ""


CHART_LINE = """() => {
  const c = document.getElementById('chart'),
        d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;  // pixels of the heap line's blue (#4fb3ff)
  for (let i = 0; i < d.length; i += 4)
    if (d[i + 3] > 128 && d[i + 2] > 180 && d[i] < 140) n++;
  return n;
}"""


def test_screenshot_shows_the_live_board(fw, page_of):
    pg = page_of()
    text = "hello, board %d" % time.monotonic_ns()
    pg.fill("#msg", text)
    pg.press("#msg", "Enter")
    if fig(pg, "led") != "true":
        pg.click("#led")
        wait_led(pg, True)
    # Let the heap chart collect some history, counted from the first sample this tab got:
    # before it, "up" is empty and any later sample would look like fifteen periods on.
    pg.wait_for_function("document.getElementById('up').dataset.v !== ''", timeout=WAIT)
    start = int(fig(pg, "up"))
    wait_sample_after(pg, start + 15 * PERIOD)
    st = fw.stats()
    # What the picture shows: connected, the chat line, the LED on as the board has it,
    # the figures of this board, and a drawn heap chart of the samples it received.
    assert pg.text_content("#st") == "live"
    assert pg.eval_on_selector("#dot", "e => e.className") == "on"
    pg.wait_for_function("t => document.getElementById('log').textContent.includes(t)",
                         arg=text, timeout=WAIT)
    assert pg.text_content("#led") == "LED on" and server_led(fw) is True
    # One sample's figures and the chart's history as they were together.
    got, hist = figs(pg, "conns", "heap", "up")
    conns = int(got["conns"][0])
    assert 1 <= conns <= st["connections"] + 1
    assert got["conns"][1] == "%d / %d" % (conns, st["slots_total"])
    heap = int(got["heap"][0])
    assert abs(heap - st["mem_free"]) < 8 * 1024, (heap, st)
    assert int(got["up"][0]) <= st["uptime_ms"]
    assert len(hist) >= 10 and hist[-1] == heap, (hist[-3:], heap)
    assert pg.evaluate(CHART_LINE) > 50, "no heap line drawn"
    out = os.path.join(ROOT, "test-output")
    os.makedirs(out, exist_ok=True)
    shot = os.path.join(out, "dashboard.png")
    pg.screenshot(path=shot)
    with open(shot, "rb") as f:
        png = f.read(24)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (900, 620)
    # The README's copy is refreshed on request only, so test runs leave the tree clean.
    docs = os.path.join(ROOT, "docs", "screenshot.png")
    if os.environ.get("RINGWS_SCREENSHOT") or not os.path.exists(docs):
        shutil.copyfile(shot, docs)


def test_page_reconnects_after_the_server_restarts(fw, page_of):
    pg = page_of()
    wait_sample_after(pg, 0)
    hellos = pg.text_content("#log").count("connected as")
    fw.kill()
    pg.wait_for_function("document.getElementById('st').textContent.startsWith('reconnecting')",
                         timeout=WAIT)
    assert pg.eval_on_selector("#dot", "e => e.className") == ""
    old_up = fig(pg, "up")  # the old connection is gone: nothing changes it any more
    restarted = time.monotonic()
    fw.start()
    wait_live(pg, RECONNECT)
    assert pg.eval_on_selector("#dot", "e => e.className") == "on"
    # A new hello, and figures from the new process: its uptime started again from zero at
    # the restart. (Not always below the old one's: the page's backoff may keep it away
    # for longer than the old process had run.)
    pg.wait_for_function("n => document.getElementById('log').textContent"
                         ".split('connected as').length - 1 > n", arg=hellos, timeout=WAIT)
    pg.wait_for_function("v => document.getElementById('up').dataset.v != v", arg=old_up,
                         timeout=WAIT)
    up = int(fig(pg, "up"))
    assert up <= fw.stats()["uptime_ms"]
    assert up <= (time.monotonic() - restarted) * 1000, (up, old_up)
