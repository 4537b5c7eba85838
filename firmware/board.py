# Platform layer: network bring-up, watchdog, reset cause and status LED.
#
# On a board (a `network` module exists): WiFi station from config with retries and
# backoff; if that fails, or the config is missing or broken, an access point with the
# configured (or default) SSID and password, so the board is always reachable and says
# why in status(). While the server runs, wifi.Link reconnects a lost station and brings
# an access-point board back to station mode (wifi.py). On the host (unix port, CPython)
# bring_up only picks the bind address and fakes nothing else: no LED, watchdog or WiFi.
#
# API (docs/API.md): bring_up(cfg) -> dict with "bind" (and on a board "poll": the period
# and function the server calls to keep the link up); feed(); status(); led(state=None);
# fatal(exc) for main.py's last resort.
try:
    import network
except ImportError:  # unix port, CPython
    network = None
else:
    # Only a real board pays for the WiFi code (about 5 KB of heap on the unix port),
    # loaded with board in launch.start's import sequence, while the heap is still whole.
    import wifi

try:
    import machine
except ImportError:  # CPython
    machine = None

_status = {"mode": None, "wifi": "off", "ip": None, "reason": None, "reset_cause": None}
_link = None  # wifi.Link on a board
_wdt = None
_wdt_ms = 0
_led_pin = None
_led_low = False
_led_state = None


def bring_up(cfg):
    """Bring the network up; return {"bind", "mode", "ip", "reason", ...}."""
    import netup  # start-up only (launch.forget drops it): it sets this module's state

    return netup.start(cfg, globals())


def led(state=None):
    """Set (True/False) or read the status LED; None when the board has none."""
    global _led_state
    if _led_pin is None:
        return None
    if state is not None:
        _led_state = bool(state)
        _led_pin.value(_led_state != _led_low)
    return _led_state


def feed(arm=True):
    """Feed the watchdog; called by the server's housekeeping tick.

    The watchdog is armed on the first such call, i.e. once the server loop runs, so a
    handler that blocks the loop trips it and slow WiFi retries at boot cannot: waits
    outside the loop call feed(False), which feeds an armed watchdog and never arms one.
    In AP mode the LED blinks.
    """
    global _wdt
    if _wdt is None and arm and _wdt_ms and machine is not None:
        _wdt = machine.WDT(timeout=_wdt_ms)
    if _wdt is not None:
        _wdt.feed()
    if arm and _status["mode"] == "ap" and _led_pin is not None:
        led(not _led_state)


def fatal(exc, pause_ms=10000):
    """main.py calls this when the server dies: on a board, report, blink, then reset
    (a fresh boot is the best recovery without a person nearby). Nothing on the host."""
    if network is None or machine is None:
        return
    try:
        wifi.pause(exc, pause_ms, led, feed)
    except Exception:
        pass  # reset all the same; only Ctrl-C (KeyboardInterrupt) stops it
    machine.reset()


def status():
    """Dict for /stats "board": mode, WiFi state, ip, reason, reset cause, watchdog, and on
    a board the link's reconnects, down_ms and drop_reason."""
    out = dict(_status)
    out["watchdog_ms"] = _wdt_ms if _wdt is not None else 0
    out["led"] = _led_state
    if _link is not None:
        _link.report(out)
    return out
