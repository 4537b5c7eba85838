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
import time

try:
    import network
except ImportError:  # unix port, CPython
    network = None

try:
    import machine
except ImportError:  # CPython
    machine = None

AP_DEFAULTS = {"ssid": "ringws-setup", "password": "ringws-setup", "channel": 6}
BACKOFF_CAP_MS = 30000
POLL_MS = 100

_status = {"mode": None, "wifi": "off", "ip": None, "reason": None, "reset_cause": None}
_sta = None
_wdt = None
_wdt_ms = 0
_led_pin = None
_led_low = False
_led_state = None


def _sleep_ms(ms):
    # Sleep in short steps and keep the watchdog fed (it may already be armed after
    # a soft reset).
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        feed()
        time.sleep_ms(min(POLL_MS, ms))


def _reset_cause():
    if machine is None or not hasattr(machine, "reset_cause"):
        return None
    cause = machine.reset_cause()
    for name in ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"):
        if getattr(machine, name, None) == cause:
            return name
    return str(cause)


def _section(cfg, key, defaults):
    # A missing or mistyped section falls back to defaults instead of failing boot.
    value = cfg.get(key)
    out = dict(defaults)
    if isinstance(value, dict):
        for k in value:
            out[k] = value[k]
    return out


def _int(value, default):
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def bring_up(cfg):
    """Bring the network up; return {"bind", "mode", "ip", "reason", ...}."""
    global _wdt_ms
    cfg = cfg if isinstance(cfg, dict) else {}
    server = cfg.get("server")
    if not isinstance(server, dict):
        server = {}
    _status["reset_cause"] = _reset_cause()
    if network is None:
        bind = server.get("host") or "127.0.0.1"
        _status.update(mode="host", wifi="none", ip=bind, reason=cfg.get("config_error"))
        return dict(_status, bind=bind)

    _wdt_ms = _int(cfg.get("watchdog_ms"), 0)
    _setup_led(cfg.get("led_pin"), bool(cfg.get("led_active_low")))
    hostname = cfg.get("hostname")
    if not isinstance(hostname, str) or not hostname:
        hostname = "ringws"
    try:
        network.hostname(hostname)
    except (AttributeError, OSError, ValueError):
        pass
    _status["hostname"] = hostname

    wifi = _section(cfg, "wifi", {"ssid": "", "password": ""})
    ssid = wifi.get("ssid")
    if cfg.get("config_error"):
        reason = "config: %s" % cfg["config_error"]
    elif not isinstance(ssid, str) or not ssid:
        reason = "no WiFi configured (wifi.ssid is empty)"
    else:
        reason = _station(ssid, str(wifi.get("password") or ""),
                          _int(wifi.get("retries"), 3),
                          _int(wifi.get("connect_timeout_ms"), 10000),
                          _int(wifi.get("backoff_ms"), 1000))
    if reason is None:
        _status.update(mode="station", wifi="connected", reason=None)
        led(True)
    else:
        _access_point(_section(cfg, "ap", AP_DEFAULTS), reason)
    print("board: %s mode, ip %s%s" % (_status["mode"], _status["ip"],
                                       "" if reason is None else " (" + reason + ")"))
    return dict(_status, bind=server.get("host") or "0.0.0.0")


def _status_name(code):
    for name in dir(network):
        if name.startswith("STAT_") and getattr(network, name) == code:
            return name[5:].lower()
    return str(code)


def _station(ssid, password, retries, timeout_ms, backoff_ms):
    """Connect as a station; None on success, else why it failed."""
    global _sta
    if network is None:
        return "no network module"
    sta = network.WLAN(network.STA_IF)
    _sta = sta
    sta.active(True)
    fatal = (getattr(network, "STAT_WRONG_PASSWORD", -1), getattr(network, "STAT_NO_AP_FOUND", -1),
             getattr(network, "STAT_CONNECT_FAIL", -1))
    reason = "no attempt"
    for attempt in range(retries + 1):
        _status.update(wifi="connecting", attempts=attempt + 1)
        try:
            sta.connect(ssid, password)
        except OSError as e:
            reason = "connect: %s" % e
        else:
            t0 = time.ticks_ms()
            while time.ticks_diff(time.ticks_ms(), t0) < timeout_ms:
                if sta.isconnected():
                    _status.update(ip=sta.ifconfig()[0], ssid=ssid)
                    return None
                code = sta.status()
                if code in fatal:
                    break
                led(not _led_state)
                _sleep_ms(POLL_MS)
            reason = "station %r: %s after %d ms" % (ssid, _status_name(sta.status()),
                                                     time.ticks_diff(time.ticks_ms(), t0))
        try:
            sta.disconnect()
        except OSError:
            pass
        if attempt < retries:
            _sleep_ms(min(backoff_ms << attempt, BACKOFF_CAP_MS))
    sta.active(False)  # free the radio for the access point
    _sta = None
    return "%s (%d attempts)" % (reason, retries + 1)


def _access_point(ap_cfg, reason):
    if network is None:
        return
    ssid = ap_cfg.get("ssid")
    if not isinstance(ssid, str) or not ssid:
        ssid = AP_DEFAULTS["ssid"]
    password = ap_cfg.get("password")
    if not isinstance(password, str) or (password and len(password) < 8):
        # WPA2 needs 8+ characters: a broken password gets the documented default,
        # never an open network.
        password = AP_DEFAULTS["password"]
    ap = network.WLAN(network.AP_IF)
    ap.active(True)
    channel = _int(ap_cfg.get("channel"), 6)
    if password:
        ap.config(ssid=ssid, key=password, security=network.AUTH_WPA2_PSK, channel=channel)
    else:
        ap.config(ssid=ssid, security=network.AUTH_OPEN, channel=channel)
    _status.update(mode="ap", wifi="access point", ssid=ssid, ip=ap.ifconfig()[0],
                   reason=reason)


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


def fatal(exc):
    """main.py calls this when the server dies: on a board, report it, blink, then reset
    (a fresh boot is the best recovery without a person nearby). Nothing on the host."""
    if network is None or machine is None:
        return
    print("board: fatal %r, resetting in 10 s (Ctrl-C for the REPL)" % (exc,))
    for _ in range(50):
        led(not _led_state)
        _sleep_ms(200)
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
