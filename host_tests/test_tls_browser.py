"""The dashboard over https in headless Chromium (Debian's, driven by Playwright), trusting
the certificate made by tools/cert.py, against the firmware under the unix port: the page
comes over https and opens its channel over wss, with certificate checks on
(ignore_https_errors stays False).

Chromium trusts the certificate through --ignore-certificate-errors-spki-list, which
accepts that one public key and nothing else: its certificate store (an NSS database)
needs certutil, which the test machine does not have. The README says how a browser
trusts it for good.
"""
import base64
import hashlib
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fwrun import Firmware
from test_dashboard_browser import CHROMIUM, FLAGS, WAIT
from test_tls_wss import HEAP, certs  # noqa: F401  (the module's certificate fixture)

pytestmark = pytest.mark.slow


def spki_pin(pem_path):
    with open(pem_path, "rb") as f:
        c = x509.load_pem_x509_certificate(f.read())
    der = c.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def fw(tmp_path_factory, certs):  # noqa: F811
    f = Firmware(tmp_path_factory.mktemp("tls_browser") / "fw", heap=HEAP, certs=certs,
                 config={"app": {"telemetry_ms": 200}}).start()
    yield f
    f.stop()


def launch(p, profile, flags):
    return p.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS + flags,
        ignore_https_errors=False, viewport={"width": 900, "height": 620})


def test_dashboard_over_https_and_wss(fw, certs, tmp_path):  # noqa: F811
    if not os.path.exists(CHROMIUM):
        pytest.fail("no %s: run `.venv/bin/python tools/setup_test_deps.py`" % CHROMIUM)
    from playwright.sync_api import Error, sync_playwright

    url = "https://127.0.0.1:%d/" % fw.tls_port
    with sync_playwright() as p:
        # Not trusted: Chromium refuses the page.
        ctx = launch(p, tmp_path / "untrusted", [])
        try:
            with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
                ctx.new_page().goto(url)
        finally:
            ctx.close()
        pin = spki_pin(certs / "host.pem")
        ctx = launch(p, tmp_path / "trusted", ["--ignore-certificate-errors-spki-list=" + pin])
        try:
            pg = ctx.new_page()
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            r = pg.goto(url)
            assert r.status == 200
            # The page's WebSocket is open: wss to the same port. Chromium also opens
            # preconnect sockets that shake hands and send no request; they hold a TLS
            # slot each (until tls_handshake_ms, /stats tls.failed.timeout) but not the
            # wss, which shakes hands beside them.
            pg.wait_for_function("document.getElementById('st').textContent == 'live'",
                                 timeout=WAIT)
            assert pg.evaluate("location.protocol") == "https:"
            st = fw.stats()["tls"]
            assert st["connections"] >= 1 and st["handshakes"] >= 2
            assert errors == []
        finally:
            ctx.close()
