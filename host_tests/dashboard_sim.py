"""The firmware for the dashboard tests: tools/fwrun.py's Firmware with the dashboard's
telemetry period, fewer slots, a URL as a property and a websockets client on /ws.
The process can be killed and started again on the same port (the reconnect test).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import fwrun  # noqa: E402  (tools/fwrun.py)
from fwrun import until  # noqa: E402

# The host board's sizing with fewer slots (the tests need four connections at once, and
# a closed one may hold its slot a moment) and room for a 200-character chat line; the
# heap stays the ESP32's.
SERVER = {"max_connections": 6, "max_message": 256}


class Firmware(fwrun.Firmware):
    def __init__(self, out_dir, telemetry_ms=200, server=SERVER):
        """server: overrides of the board's server settings (None: the board's own)."""
        fwrun.Firmware.__init__(self, out_dir, server=server,
                                config={"app": {"telemetry_ms": telemetry_ms}})
        self.telemetry_ms = telemetry_ms

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/ws" % self.port

    def get(self, path, headers=None, timeout=5.0):
        """(status, headers, body) of a 200; a 503 (no free slot yet) is asked again."""
        last = [None]

        def answered():
            last[0] = fwrun.Firmware.get(self, path, headers, timeout)
            return last[0][0] != 503

        until(answered, timeout, 0.1)
        if last[0][0] != 200:
            raise AssertionError("GET %s: %r\n%s" % (path, last[0][:2], self.log()))
        return last[0]

    def ws(self, timeout=5.0):
        """A websockets client on /ws; a 503 (no free slot yet) is asked again."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        def attempt():
            try:
                return connect(self.ws_url)
            except InvalidStatus as e:
                if e.response.status_code != 503:
                    raise
                return None

        ws = until(attempt, timeout, 0.1)
        if ws is None:
            raise AssertionError("/ws still 503 after %s s\n%s" % (timeout, self.log()))
        return ws
