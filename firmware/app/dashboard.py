# The dashboard: the page (/ from www/) and its WebSocket channel (/ws).
#
# Server -> page, one JSON text message each:
#   {"t":"hello","id":7,"led":false,"sim":true,"ms":1000,"max":256}  on connect
#                                     (sim: the LED is simulated; max: largest command)
#   {"t":"stats","led":false,"s":{.. /stats ..}}      every telemetry_ms
#   {"t":"led","on":true}                             after anyone toggles the LED
#   {"t":"say","from":7,"text":"hi"}                  a message from one page to all
#   {"t":"sent","to":3,"skipped":0}                   to the sender of a "say"
#   {"t":"error","error":"..."}                       a bad command, and why
# Page -> server: {"cmd":"led","on":true} and {"cmd":"say","text":"..."}.
#
# Flow control: telemetry is never queued. A sample that does not fit a tab's ring is
# skipped and counted (srv.count_drop); that tab then gets nothing until its drain callback
# (on_writable) says the ring has room again, so a slow tab costs one failed send, not a
# backlog. Chat goes out through srv.broadcast, which skips and counts full rings the same
# way; the sender is told how many pages were skipped.
import json

PATH = "/ws"
MAX_TEXT = 200  # characters of a "say" message; the frame must fit any ring
DEFAULT_MS = 1000
MIN_MS = 100


class _Led:
    # The board's status LED, or a simulated pin where there is none (the host, a board
    # without led_pin): board.led() then returns None and the state lives here.
    def __init__(self, board):
        self.pin = getattr(board, "led", None)
        self.on = False
        self.simulated = self.pin is None or self.pin() is None

    def __call__(self, state=None):
        if not self.simulated:
            return bool(self.pin(state))
        if state is not None:
            self.on = bool(state)
        return self.on


class Dashboard:
    def __init__(self, srv, board, period_ms):
        self.srv = srv
        self.board = board
        self.period_ms = period_ms
        self.led = _Led(board)
        # Largest command the server assembles: the page checks before sending.
        self.max_message = (getattr(srv, "cfg", None) or {}).get("max_message", 0)
        self.tabs = []  # open /ws connections, in the order they came

    # -- handler callbacks -------------------------------------------------------------
    def on_open(self, conn):
        conn.data = False  # True while the ring is full: skip samples until drained
        self.tabs.append(conn)
        self._reply(conn, {"t": "hello", "id": conn.id, "led": self.led(),
                           "sim": self.led.simulated, "ms": self.period_ms,
                           "max": self.max_message})

    def on_writable(self, conn):
        conn.data = False

    def on_close(self, conn, code, reason):
        if conn in self.tabs:
            self.tabs.remove(conn)

    def on_message(self, conn, data, text):
        if not text:
            return self._error(conn, "binary messages are not commands")
        try:
            msg = json.loads(str(data, "utf-8"))
        except (ValueError, TypeError):
            return self._error(conn, "not JSON")
        if not isinstance(msg, dict):
            return self._error(conn, "a command is a JSON object")
        cmd = msg.get("cmd")
        if cmd == "led":
            return self._led(conn, msg)
        if cmd == "say":
            return self._say(conn, msg)
        if cmd is None:
            return self._error(conn, 'missing "cmd"')
        return self._error(conn, "unknown cmd (use led or say)")

    # -- commands ----------------------------------------------------------------------
    def _led(self, conn, msg):
        on = msg.get("on")
        if on is not True and on is not False:
            return self._error(conn, 'led needs "on": true or false')
        state = self.led(on)
        self.srv.broadcast(json.dumps({"t": "led", "on": state}), True, PATH)

    def _say(self, conn, msg):
        text = msg.get("text")
        if not isinstance(text, str) or not text.strip():
            return self._error(conn, 'say needs "text": a non-empty string')
        if len(text) > MAX_TEXT:
            return self._error(conn, "text longer than %d characters" % MAX_TEXT)
        out = json.dumps({"t": "say", "from": conn.id, "text": text})
        sent = self.srv.broadcast(out, True, PATH)
        self._reply(conn, {"t": "sent", "to": sent, "skipped": len(self.tabs) - sent})

    def _error(self, conn, why):
        self._reply(conn, {"t": "error", "error": why})

    def _reply(self, conn, obj):
        if not conn.send(json.dumps(obj), True):
            self.srv.count_drop(1)

    # -- telemetry ---------------------------------------------------------------------
    def sample(self):
        st = self.srv.stats()
        if "board" not in st:
            status = getattr(self.board, "status", None)
            if status is not None:
                st["board"] = status()
        return '{"t":"stats","led":%s,"s":%s}' % (
            "true" if self.led() else "false", json.dumps(st))

    def tick(self, now_ms=None):
        if not self.tabs:
            return  # nobody watching: not even the stats are gathered
        frame = self.sample()
        skipped = 0
        for conn in self.tabs:
            if conn.data or not conn.open:
                skipped += 1  # still draining: skip, don't queue
            elif not conn.send(frame, True):
                conn.data = True  # the refused send armed on_writable
                skipped += 1
        if skipped:
            self.srv.count_drop(skipped)


def install(srv, cfg, board):
    app_cfg = cfg.get("app") or {}
    ms = max(MIN_MS, int(app_cfg.get("telemetry_ms", DEFAULT_MS)))
    dash = Dashboard(srv, board, ms)
    srv.route(PATH, dash)
    srv.static("/", "www")
    srv.add_timer(ms, dash.tick)
    return dash
