# A switch with a token: {"on": true} or {"on": false} over the WebSocket /switch turns
# the board's LED (or your relay: change apply()) on or off, and every open connection
# gets the new state, {"on": true}. / is a page with the button.
#
#   make sim APP=examples/switch.py        then open the address it prints
#
# The token comes with the WebSocket's address, /switch?token=..., since a browser cannot
# set headers on a WebSocket (the page passes on its own ?token=). Anyone may watch the
# state; a command from a connection without the right token closes it with 1008
# "bad token". Put the token in secrets.json, {"app": {"token": "..."}} (letters, digits,
# - and _: it goes into the address as it is); without one, a random token is made at
# each start and printed.
import json
import os

PAGE = """<!doctype html><meta charset=utf-8><title>switch</title>
<button id=b disabled>...</button> <span id=s></span><script>
const ws = new WebSocket("ws://" + location.host + "/switch" + location.search);
let on = false;
ws.onmessage = (e) => {
  on = JSON.parse(e.data).on;
  b.textContent = on ? "turn off" : "turn on";
  b.disabled = false;
  s.textContent = on ? "ON" : "off";
};
ws.onclose = (e) => { b.disabled = true; s.textContent = "closed: " + e.code + " " + e.reason; };
b.onclick = () => ws.send(JSON.stringify({on: !on}));
</script>"""


class Switch:
    def __init__(self, srv, board, token):
        self.srv = srv
        self.board = board
        self.token = "token=" + token
        self.on = False

    def state(self):
        return '{"on": %s}' % ("true" if self.on else "false")

    def apply(self):
        if self.board is not None:
            self.board.led(self.on)

    def on_open(self, conn):
        conn.data = self.token in conn.query.split("&")   # may this connection switch?
        conn.send(self.state())

    def on_message(self, conn, data, text):
        if not conn.data:
            return conn.close(1008, "bad token")
        try:
            on = json.loads(str(data, "utf-8"))["on"]
        except (ValueError, KeyError, TypeError):
            on = None
        if on is not True and on is not False:
            return conn.send('{"error": "expected {\\"on\\": true} or {\\"on\\": false}"}')
        self.on = on
        self.apply()
        self.srv.broadcast(self.state(), path="/switch")   # a full ring: skipped, counted


def install(srv, cfg, board):
    token = (cfg.get("app") or {}).get("token")
    if not token:
        token = "".join("%02x" % b for b in os.urandom(8))
        print("switch: no app.token in config.json; open /?token=%s" % token)
    for c in token:
        if not (c.isalpha() or c.isdigit() or c in "-_"):
            raise ValueError("app.token: letters, digits, - and _ only")
    srv.route("/switch", Switch(srv, board, token))
    srv.http("/", lambda srv, req: (200, "text/html; charset=utf-8", PAGE))
