"""permessage-deflate with headless Chromium (Debian's, driven by Playwright), which always
offers it: against the firmware under the unix port at 110 KiB (5 slots: the code then loads beside
the free slots' reserve), the page's WebSocket to /echo negotiates it and gets back what it sent, text and binary, small to 256 KiB."""
import os

import pytest

from fwrun import Firmware

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

ECHO = """async (url) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; });
  const got = [];
  let want = 0;
  const all = new Promise((ok) => { ws.onmessage = (e) => { got.push(e.data); if (got.length == want) ok(); }; });
  const json = JSON.stringify(Array.from({length: 40}, (_, i) => ({id: i, name: "r\\u00e9sum\\u00e9 \\u2713", v: i * 1.5})));
  const sent = [json.slice(0, 1024), "x".repeat(100000), json.repeat(30),
                new Uint8Array(65536).map((_, i) => (i * 7) & 255), "", "\\u00e9t\\u00e9"];
  for (let i = 0; i < 50; i++) sent.push(json.slice(0, 16 + i * 20));
  want = sent.length;
  for (const m of sent) ws.send(m);
  await all;
  const same = sent.map((m, i) => typeof m == "string" ? m === got[i]
      : got[i] instanceof ArrayBuffer && new Uint8Array(got[i]).every((b, j) => b == m[j]) && got[i].byteLength == m.length);
  ws.close();
  return {extensions: ws.extensions, same: same};
}"""


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("pmd_browser") / "fw",
                 server={"inflaters": 1, "max_connections": 5, "ping_interval_ms": 0}).start()
    yield f
    f.stop()
    out = f.log(tail=None)
    assert "Traceback" not in out and "out of memory" not in out, out


def test_chromium_compresses_and_gets_every_message_back(fw, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail("no %s: run `.venv/bin/python tools/setup_test_deps.py` (make test does)"
                    % CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                   headless=True, args=FLAGS)
        try:
            pg = ctx.new_page()
            pg.goto(fw.url("/stats"))  # (same origin; the page itself does not matter)
            out = pg.evaluate(ECHO, fw.ws_url("/echo"))
        finally:
            ctx.close()
    assert out["extensions"].startswith("permessage-deflate"), out["extensions"]
    assert "client_max_window_bits=9" in out["extensions"]
    assert all(out["same"]), out["same"]
    st = fw.stats()
    assert st["messages_in"] >= 56 and st["closed"]["protocol"] == 0
