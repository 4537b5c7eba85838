"""The examples' pages in headless Chromium (Debian's, through Playwright) against the
firmware under the MicroPython unix port at 110 KiB, each example built in from its file."""
import pytest

from test_dashboard_browser import WAIT, browser  # noqa: F401 (fixture)
from test_examples import start

pytestmark = pytest.mark.slow  # real firmware, Chromium


@pytest.fixture
def tabs(browser):  # noqa: F811
    """new() opens a tab that records page errors; all are checked and closed after."""
    opened = []

    def new(url):
        pg = browser.new_page()
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.goto(url)
        opened.append(pg)
        return pg

    yield new
    for pg in opened:
        assert pg.errors == [], pg.errors
        pg.close()


def text_is(pg, sel, want):
    pg.wait_for_function("([s, w]) => document.querySelector(s).textContent === w",
                         arg=[sel, want], timeout=WAIT)


def test_sensor_page_shows_the_stream(tmp_path, tabs):
    fw = start(tmp_path, "sensor.py", {"period_ms": 100}, {"tick_ms": 20})
    try:
        pg = tabs(fw.url("/"))
        pg.wait_for_function("() => !isNaN(parseFloat(document.getElementById('v')"
                             ".textContent))", timeout=WAIT)
        pg.wait_for_function("() => document.getElementById('log').textContent"
                             ".split('\\n').length > 3", timeout=WAIT)
    finally:
        fw.stop()


def test_switch_page_switches_with_the_token_and_watches_without(tmp_path, tabs):
    fw = start(tmp_path, "switch.py", {"token": "page-token"})
    try:
        owner, watcher = tabs(fw.url("/?token=page-token")), tabs(fw.url("/"))
        for pg in (owner, watcher):
            text_is(pg, "#s", "off")
        owner.click("#b")
        for pg in (owner, watcher):
            text_is(pg, "#s", "ON")
            text_is(pg, "#b", "turn off")
        watcher.click("#b")   # no token: refused
        text_is(watcher, "#s", "closed: 1008 bad token")
        owner.click("#b")
        text_is(owner, "#s", "off")
    finally:
        fw.stop()


def test_settings_page_saves_and_a_restart_applies(tmp_path, tabs):
    fw = start(tmp_path, "settings.py")
    try:
        pg = tabs(fw.url("/"))
        assert pg.title() == "ringws"
        pg.fill("input[name=name]", "Garden & shed")
        pg.fill("input[name=period_ms]", "2500")
        pg.click("button")
        pg.wait_for_selector("text=Saved", timeout=WAIT)
        assert pg.title() == "ringws"   # in use after the next reset
        fw.stop()
        fw.start()
        pg.goto(fw.url("/"))
        assert pg.title() == "Garden & shed"
        assert pg.input_value("input[name=period_ms]") == "2500"
    finally:
        fw.stop()
