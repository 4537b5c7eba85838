# WiFi bring-up for a real board: station with retries and backoff, access-point
# fallback that says why. Imported by board.bring_up only where a `network` module exists.
import time

import board
import network

AP_DEFAULTS = {"ssid": "ringws-setup", "password": "ringws-setup", "channel": 6}
BACKOFF_CAP_MS = 30000
POLL_MS = 100
_status = board._status


def _sleep_ms(ms):
    # Sleep in short steps and keep the watchdog fed (it may already be armed after
    # a soft reset).
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        board.feed()
        time.sleep_ms(min(POLL_MS, ms))


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


def bring_up(cfg, server):
    board._wdt_ms = _int(cfg.get("watchdog_ms"), 0)
    board._setup_led(cfg.get("led_pin"), bool(cfg.get("led_active_low")))
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
        board.led(True)
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
    sta = network.WLAN(network.STA_IF)
    board._sta = sta
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
                board.led(not board._led_state)
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
    board._sta = None
    return "%s (%d attempts)" % (reason, retries + 1)


def _access_point(ap_cfg, reason):
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


