# Platform layer: network bring-up, watchdog, reset cause and status LED.
#
# On a board (a `network` module exists): WiFi station from config with retries and
# backoff; if that fails, or the config is missing or broken, an access point with the
# configured (or default) SSID and password, so the board is always reachable and says
# why in status(). On the host (unix port, CPython) bring_up only picks the bind address
# and fakes nothing else: no LED, no watchdog, no WiFi.
#
# API (docs/API.md): bring_up(cfg) -> dict with "bind"; feed(); status(); led(state=None);
# fatal(exc) for main.py's last resort.
try:
    import network
except ImportError:  # unix port, CPython
    network = None

try:
    import machine
except ImportError:  # CPython
    machine = None

_status = {"mode": None, "wifi": "off", "ip": None, "reason": None, "reset_cause": None}
_sta = None
_wdt = None
_wdt_ms = 0
_led_pin = None
_led_low = False
_led_state = None


def _reset_cause():
    if machine is None or not hasattr(machine, "reset_cause"):
        return None
    cause = machine.reset_cause()
    for name in ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"):
        if getattr(machine, name, None) == cause:
            return name
    return str(cause)


def bring_up(cfg):
    """Bring the network up; return {"bind", "mode", "ip", "reason", ...}."""
    cfg = cfg if isinstance(cfg, dict) else {}
    server = cfg.get("server")
    if not isinstance(server, dict):
        server = {}
    _status["reset_cause"] = _reset_cause()
    if network is None:
        bind = server.get("host") or "127.0.0.1"
        _status.update(mode="host", wifi="none", ip=bind, reason=cfg.get("config_error"))
        return dict(_status, bind=bind)

    # Only a real board pays for the WiFi code (about 4 KB of heap on the unix port).
    import wifi

    return wifi.bring_up(cfg, server)


def _setup_led(pin, active_low):
    global _led_pin, _led_low
    if machine is None or not isinstance(pin, int) or isinstance(pin, bool):
        return
    try:
        _led_pin = machine.Pin(pin, machine.Pin.OUT)
    except (ValueError, OSError):
        _led_pin = None
        return
    _led_low = active_low
    led(False)


def led(state=None):
    """Set (True/False) or read the status LED; None when the board has none."""
    global _led_state
    if _led_pin is None:
        return None
    if state is not None:
        _led_state = bool(state)
        _led_pin.value(_led_state != _led_low)
    return _led_state


def feed():
    """Feed the watchdog; called by the server's housekeeping tick.

    The watchdog is armed on the first call, i.e. once the server loop runs, so a slow
    WiFi bring-up with retries cannot trip it. In AP mode the LED blinks.
    """
    global _wdt
    if _wdt_ms and machine is not None:
        if _wdt is None:
            _wdt = machine.WDT(timeout=_wdt_ms)
        _wdt.feed()
    if _status["mode"] == "ap" and _led_pin is not None:
        led(not _led_state)


def fatal(exc, pause_ms=10000):
    """main.py calls this when the server dies: on a board, report it, blink, then reset
    (a fresh boot is the best recovery without a person nearby). Nothing on the host."""
    if network is None or machine is None:
        return
    import time

    print("board: fatal %r, resetting in %d ms (Ctrl-C for the REPL)" % (exc, pause_ms))
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < pause_ms:
        led(not _led_state)
        feed()
        time.sleep_ms(min(200, pause_ms))
    machine.reset()


def status():
    """Dict for /stats "board": mode, WiFi state, ip, reason, reset cause, watchdog."""
    out = dict(_status)
    out["watchdog_ms"] = _wdt_ms if _wdt is not None else 0
    out["led"] = _led_state
    if _sta is not None:
        try:
            up = _sta.isconnected()
            out["wifi"] = "connected" if up else "lost"
            if up:
                out["rssi"] = _sta.status("rssi")
        except (OSError, ValueError):
            pass
    return out
