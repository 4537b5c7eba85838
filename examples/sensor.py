# A sensor stream: a timer reads a value every period_ms and broadcasts it to every
# WebSocket on /sensor; / is a page that shows the stream.
#
#   make sim APP=examples/sensor.py        then open http://127.0.0.1:8080/
#
# config.json "app" (all optional): {"period_ms": 1000, "adc_pin": 34}. Without adc_pin
# the value is made up (a random walk), so the example runs anywhere.
#
# A tab that does not keep up is skipped, never waited for: srv.broadcast() leaves out
# every connection whose send ring is full and counts each one in /stats "dropped". A
# tab whose ring stays full is closed by the server (1008) after stuck_timeout_ms.
import random

PAGE = """<!doctype html><meta charset=utf-8><title>sensor</title>
<h1 id=v>-</h1><pre id=log></pre><script>
const ws = new WebSocket("ws://" + location.host + "/sensor");
ws.onmessage = (e) => {
  v.textContent = JSON.parse(e.data).value;
  log.textContent = (e.data + "\\n" + log.textContent).slice(0, 2000);
};
ws.onclose = (e) => { v.textContent = "closed (" + e.code + ")"; };
</script>"""


def reader(adc_pin):
    """A function returning one reading."""
    if adc_pin is not None:
        from machine import ADC, Pin

        return ADC(Pin(adc_pin)).read_u16   # 0..65535
    walk = [20.0]

    def made_up():
        walk[0] += (random.getrandbits(4) - 7.5) / 50
        return round(walk[0], 2)

    return made_up


class Stream:
    """The timer callback: one sample, numbered, to every open /sensor connection."""

    def __init__(self, srv, read):
        self.srv = srv
        self.read = read
        self.n = 0

    def __call__(self, now_ms):
        self.n += 1
        msg = '{"n": %d, "ms": %d, "value": %s}' % (self.n, now_ms, self.read())
        self.srv.broadcast(msg, path="/sensor")   # full rings are skipped and counted


class Listeners:
    """/sensor: nothing to receive; a connection is a listener while it is open."""

    def on_message(self, conn, data, text):
        pass


def install(srv, cfg, board):
    app = cfg.get("app") or {}
    srv.route("/sensor", Listeners())
    srv.http("/", lambda srv, req: (200, "text/html; charset=utf-8", PAGE))
    srv.add_timer(app.get("period_ms", 1000), Stream(srv, reader(app.get("adc_pin"))))
