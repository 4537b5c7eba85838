# The dashboard's WebSocket channel (/ws); the page itself is www/index.html.
#
# Server -> page, one JSON text message each:
#   {"t":"hello","id":7,"led":false,"sim":true,"ms":1000,"max":128}   on connect
#       sim: the LED is simulated (no pin); ms: telemetry period; max: largest command
#   {"t":"stats","led":false,"s":{..},"rtt":[[7,3],..]}   every telemetry_ms; s: the
#       /stats figures the page shows, under the same names, and a subset of "board";
#       rtt: [tab id, round trip in ms] of every tab, measured by the server's pings
#       (conn.ping about once a second, on_pong), for the tabs that answered one
#   {"t":"led","on":true}                after anyone toggles the LED
#   {"t":"say","from":7,"text":"hi"}     a message from one page to all
#   {"t":"sent","to":3,"skipped":0}      to the sender of a "say"
#   {"t":"error","error":"..."}          a bad command, and why
# Page -> server: {"cmd":"led","on":true} and {"cmd":"say","text":"..."}.
#
# Flow control: telemetry is never queued. A sample that does not fit a tab's ring is
# skipped and counted (srv.count_drop); that tab then gets nothing until its drain callback
# (on_writable) says the ring has room again, so a slow tab costs one failed send, not a
# backlog. Chat goes out through srv.broadcast, which skips and counts full rings the same
# way; the sender is told how many pages were skipped.
#
# Memory: every outgoing message is serialised by json.dump into one buffer allocated at
# start-up, so a tick allocates no string the size of the sample (on a fragmented 110 KiB
# heap a 700-byte string can fail where many small pieces do not). The module is one class
# because each class and function costs heap once imported.
import io
import json

PATH = "/ws"
MAX_TEXT = 200  # characters of a "say" message
DEFAULT_MS = 1000
MIN_MS = 100
SAMPLE_ROOM = 400  # bytes for a stats sample; the buffer adds max_message for "say"
STATS = ("mem_free", "mem_alloc", "connections", "slots_total", "slots_free", "bytes_in",
         "bytes_out", "messages_in", "messages_out", "dropped", "uptime_ms")
BOARD = ("reset_cause", "rssi", "wifi", "mode", "ip")


class Dashboard(io.IOBase):  # a stream too: json.dump writes into self.buf
    def __init__(self, srv, board, period_ms):
        self.srv = srv
        self.board = board
        self.period_ms = period_ms
        self.tabs = []  # open /ws connections, in the order they came
        self.rtt = {}  # tab id -> its last round trip (ms)
        self.ticks = 0  # the tabs are pinged every `every` ticks: about once a second
        self.every = max(1, 1000 // period_ms)
        # The status LED, or a simulated pin where the board has none (the host, no
        # led_pin): board.led() then returns None and the state lives here.
        self.pin = getattr(board, "led", None)
        self.sim = self.pin is None or self.pin() is None
        self.lit = False
        # Largest command the page may send: what the server hands over whole (a single
        # frame up to recv_buf, or max_message assembled), and small enough that the
        # "say" it turns into still fits a send ring beside the control reserve.
        cfg = getattr(srv, "cfg", None) or {}
        whole = max(cfg.get("recv_buf", 256), cfg.get("max_message", 256))
        self.max_message = min(whole, cfg.get("send_ring", 1024) - 300)
        self.buf = bytearray(SAMPLE_ROOM + self.max_message)
        self.n = 0

    def led(self, state=None):
        if not self.sim:
            return bool(self.pin(state))
        if state is not None:
            self.lit = bool(state)
        return self.lit

    # -- output: compact JSON into the preallocated buffer ------------------------------
    def write(self, piece):
        if isinstance(piece, str):  # CPython hands over str; MicroPython bytes-like
            piece = piece.encode()
        n, k = self.n, len(piece)
        if n + k > len(self.buf):
            raise ValueError("message larger than the dashboard's buffer")
        self.buf[n : n + k] = piece
        self.n = n + k
        return k

    def dump(self, obj):
        """obj as JSON: a memoryview valid until the next dump."""
        self.n = 0
        json.dump(obj, self, separators=(",", ":"))
        return memoryview(self.buf)[: self.n]

    def reply(self, conn, obj):
        if not conn.send(self.dump(obj), True):
            self.srv.count_drop(1)

    # -- handler callbacks --------------------------------------------------------------
    def on_open(self, conn):
        conn.data = False  # True while the ring is full: skip samples until drained
        self.tabs.append(conn)
        self.reply(conn, {"t": "hello", "id": conn.id, "led": self.led(), "sim": self.sim,
                          "ms": self.period_ms, "max": self.max_message})

    def on_writable(self, conn):
        conn.data = False

    def on_close(self, conn, code, reason):
        if conn in self.tabs:
            self.tabs.remove(conn)
        self.rtt.pop(conn.id, None)

    def on_pong(self, conn, rtt_ms):
        self.rtt[conn.id] = rtt_ms

    def on_message(self, conn, data, text):
        why = self.command(conn, data, text)
        if why:
            self.reply(conn, {"t": "error", "error": why})

    def command(self, conn, data, text):
        """Run one command; return why it is bad, or None."""
        if not text:
            return "binary messages are not commands"
        try:
            msg = json.loads(str(data, "utf-8"))
        except (ValueError, TypeError):
            return "not JSON"
        if not isinstance(msg, dict):
            return "a command is a JSON object"
        cmd = msg.get("cmd")
        if cmd == "led":
            on = msg.get("on")
            if on is not True and on is not False:
                return 'led needs "on": true or false'
            self.srv.broadcast(self.dump({"t": "led", "on": self.led(on)}), True, PATH)
        elif cmd == "say":
            text = msg.get("text")
            if not isinstance(text, str) or not text.strip():
                return 'say needs "text": a non-empty string'
            if len(text) > MAX_TEXT:
                return "text longer than %d characters" % MAX_TEXT
            try:
                out = self.dump({"t": "say", "from": conn.id, "text": text})
            except ValueError:
                return "text too long for the device"
            sent = self.srv.broadcast(out, True, PATH)
            self.reply(conn, {"t": "sent", "to": sent, "skipped": len(self.tabs) - sent})
        elif cmd is None:
            return 'missing "cmd"'
        else:
            return "unknown cmd (use led or say)"

    # -- telemetry ----------------------------------------------------------------------
    def tick(self, now_ms=None):
        if not self.tabs:
            return  # nobody watching: not even the stats are gathered
        st = self.srv.stats()
        s = {}
        for k in STATS:
            if k in st:
                s[k] = st[k]
        board = st.get("board")
        if board is None:
            status = getattr(self.board, "status", None)
            board = status() if status is not None else {}
        s["board"] = b = {}
        for k in BOARD:
            if board.get(k) is not None:
                b[k] = board[k]
        try:
            frame = self.dump({"t": "stats", "led": self.led(), "s": s,
                               "rtt": list(self.rtt.items())})
        except ValueError as e:  # too big for the buffer: every tab misses it
            print("dashboard:", e)
            self.srv.count_drop(len(self.tabs))
            return
        skipped = 0
        ping = not self.ticks % self.every
        self.ticks += 1
        for conn in self.tabs:
            if conn.data or not conn.open:
                skipped += 1  # still draining: skip, don't queue
            elif not conn.send(frame, True):
                conn.data = True  # the refused send armed on_writable
                skipped += 1
            elif ping:
                conn.ping()  # (refused when the ring is full: measured at the next)
        if skipped:
            self.srv.count_drop(skipped)


def make(srv, cfg, board):
    """The Dashboard for cfg, registered nowhere (app/__init__.py routes /ws through a
    stand-in that loads and drops it)."""
    ms = max(MIN_MS, int((cfg.get("app") or {}).get("telemetry_ms", DEFAULT_MS)))
    return Dashboard(srv, board, ms)


def install(srv, cfg, board):
    """Register /ws and the telemetry timer; the page (static "/") is app/__init__'s."""
    dash = make(srv, cfg, board)
    srv.route(PATH, dash)
    srv.add_timer(dash.period_ms, dash.tick)
    return dash
