"""The dashboard in headless Chromium (Debian's, through Playwright) against the firmware
under the MicroPython unix port at 110 KiB, with an access token set (config "access").

Browsers cannot set headers on a WebSocket, so the page connects to /ws?token=...: the
token comes from the page's own address (/?token=...), else from what this tab kept
(sessionStorage), else the page asks for it once the board answers 401.
"""
import pytest

from fwrun import Firmware
from test_dashboard_browser import RECONNECT, WAIT, browser  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # real firmware, Chromium

TOKEN = "s3cret token/+"  # characters a URL must escape


@pytest.fixture
def fw(tmp_path):
    # A fresh server for each test, with the board's own sizing (110 KiB; a page load
    # beside an open dashboard tab fits with a token too: docs/hostile.md, access).
    f = Firmware(tmp_path / "fw", config={"access": {"token": TOKEN}}).start()
    yield f
    f.stop()


@pytest.fixture
def tab(browser):  # noqa: F811
    """A new tab (its own sessionStorage) that records the prompts it shows."""
    pg = browser.new_page()
    pg.errors, pg.prompts, pg.answers = [], [], []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))

    def on_dialog(d):
        pg.prompts.append(d.message)
        answer = pg.answers.pop(0) if pg.answers else None
        d.accept(answer) if answer is not None else d.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    assert pg.errors == [], pg.errors
    pg.close()


def wait_status(pg, prefix, timeout=WAIT):
    # (The element is looked up on each poll: a reload replaces the document meanwhile.)
    pg.wait_for_function("p => (document.getElementById('st') || {textContent: ''})"
                         ".textContent.startsWith(p)", arg=prefix, timeout=timeout)


def wait_live(pg, timeout=WAIT):
    wait_status(pg, "live", timeout)


def test_token_from_the_address_connects_and_is_kept_for_the_tab(fw, tab):
    from urllib.parse import quote

    tab.goto(fw.url("/?token=" + quote(TOKEN, safe="")))
    wait_live(tab)
    assert tab.prompts == []
    # Kept for this tab, and out of the address bar.
    assert tab.evaluate("sessionStorage.getItem('ringws-token')") == TOKEN
    assert "token" not in tab.url
    # A reload (the address has no token now) connects with the kept one. The server
    # restarts first, so that the reload has the heap of a first load.
    fw.kill()
    fw.start()
    tab.reload()
    wait_live(tab)
    assert tab.prompts == []


def test_page_asks_once_when_the_board_needs_a_token(fw, tab):
    tab.answers.append(TOKEN)
    tab.goto(fw.url("/"))
    wait_live(tab)
    assert len(tab.prompts) == 1 and "token" in tab.prompts[0], tab.prompts
    assert tab.evaluate("sessionStorage.getItem('ringws-token')") == TOKEN
    # Reconnecting (the server restarted) does not ask again.
    fw.kill()
    wait_status(tab, "reconnecting")
    fw.start()
    wait_live(tab, RECONNECT)  # (the page's own backoff)
    assert len(tab.prompts) == 1, tab.prompts


def test_wrong_token_is_asked_for_again(fw, tab):
    tab.answers.append(TOKEN)
    tab.goto(fw.url("/?token=wrong"))
    wait_live(tab)
    assert len(tab.prompts) == 1 and tab.prompts[0].startswith("Wrong token"), tab.prompts
    assert tab.evaluate("sessionStorage.getItem('ringws-token')") == TOKEN


def test_no_answer_leaves_the_page_waiting_without_retrying(fw, tab):
    tab.goto(fw.url("/"))
    wait_status(tab, "needs its access token")
    assert len(tab.prompts) == 1
    tab.wait_for_timeout(1500)  # longer than the first reconnect delay
    assert len(tab.prompts) == 1
    assert tab.text_content("#st").startswith("needs its access token")
