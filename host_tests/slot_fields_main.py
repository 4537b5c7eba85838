# Test entry point (fwrun.Firmware(entry=...) copies it into the build), for
# test_core_slot_fields.py: main.py plus /slotkeys, an HTTP route answering
# "<entries> <names the slots hold now that none held at start-up> | <names gone>", and
# /pongs, a WebSocket echo whose handler takes pong events (conn.ping(), on_pong).
# A slot's attribute table is sized at start-up (every field set by slot.new_slot): a name
# set later grows the table of each slot that gets it.
_START = None


def _keys(srv):
    return set(k for s in srv.slots for k in s.__dict__)


def _slotkeys(srv, req):
    now = _keys(srv)
    return 200, "text/plain", "%d %s | %s" % (
        max(len(s.__dict__) for s in srv.slots), ",".join(k for k in now if k not in _START) or "-",
        ",".join(k for k in _START if k not in now) or "-")


class Pongs:
    def on_message(self, conn, data, text):
        conn.ping(b"p")
        conn.send(data, text)

    def on_pong(self, conn, rtt_ms):
        conn.send("pong", True)


def _hook(srv, cfg):
    global _START
    _START = _keys(srv)
    srv.http("/slotkeys", _slotkeys)
    srv.route("/pongs", Pongs())


import launch  # noqa: E402

launch.after_install = _hook
del launch
import main  # noqa: E402,F401  (runs the firmware's main.py, as the board does)
