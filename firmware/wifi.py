# The board-only half of the platform: WiFi (the station with retries and backoff, the
# access-point fallback that keeps retrying the station, link recovery while the server
# runs) and the pause before a fatal reset. Imported by board only where a `network`
# module exists. The start-up half is netup.py; board hands it what it may use (the
# status dict, led, feed) and keeps the Link it gets back.
import time

import network

AP_DEFAULTS = {"ssid": "ringws-setup", "password": "ringws-setup", "channel": 6}
BACKOFF_CAP_MS = 30000
RUN_POLL_MS = 250    # the period of the server timer that calls Link.poll
# Codes after which waiting out connect_timeout_ms is pointless.
_FATAL = tuple(getattr(network, n, -1) for n in
               ("STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND", "STAT_CONNECT_FAIL"))


def _int(value, default):
    return value if type(value) is int else default


def _status_name(code):
    for name in dir(network):
        if name.startswith("STAT_") and getattr(network, name) == code:
            return name[5:].lower()
    return str(code)


def pause(exc, pause_ms, led, feed):
    # board.fatal's wait before the reset: the LED blinks and Ctrl-C reaches the REPL.
    print("board: fatal %r, resetting in %d ms (Ctrl-C for the REPL)" % (exc, pause_ms))
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < pause_ms:
        led(not led())
        feed(False)
        time.sleep_ms(min(200, pause_ms))


class Link:
    """The station link as a state machine stepped by poll(now), which never blocks:
    WLAN.connect returns at once and each poll looks at isconnected()/status()."""

    def __init__(self, status, led, wifi, ap_cfg):
        self.status, self.led, self.ap_cfg = status, led, ap_cfg
        ssid = wifi.get("ssid")
        self.ssid = ssid if isinstance(ssid, str) and ssid else None
        self.password = str(wifi.get("password") or "")
        self.retries = _int(wifi.get("retries"), 3)
        self.timeout_ms = _int(wifi.get("connect_timeout_ms"), 10000)
        self.backoff_ms = _int(wifi.get("backoff_ms"), 1000)
        self.retry_ms = _int(wifi.get("retry_ms"), 60000)  # from AP mode; 0: never
        self.sta = self.ap = None
        self.t_try = None    # ticks when the connect in flight started
        self.t_next = None   # ticks when the next attempt starts
        self.t_down = None   # ticks when a working link was lost
        self.failed = 0      # attempts failed in a row
        # down_ms: the total of the finished outages (report() adds the current one).
        status.update(reconnects=0, down_ms=0, drop_reason=None)

    def poll(self, now):
        st = self.status
        if self.ssid is None:
            return
        if self.t_try is not None:
            self._attempt(now, self.t_try)
        elif self.t_next is not None:
            if self.sta.isconnected():  # the ESP32's driver may reconnect by itself
                self._connected(now)
            elif time.ticks_diff(now, self.t_next) >= 0:
                self.start(now)
        elif st["mode"] == "station" and not self.sta.isconnected():
            why = _status_name(self.sta.status())
            self.t_down = now
            self.failed = 0
            st.update(wifi="lost", drop_reason=why)
            self.led(False)
            print("board: WiFi lost (%s), reconnecting" % why)
            self.start(now)

    def start(self, now):
        st = self.status
        if self.sta is None:
            self.sta = network.WLAN(network.STA_IF)
        if st["mode"] is None:
            st["wifi"] = "connecting"
        st["attempts"] = self.failed + 1
        self.t_next = None
        try:
            self.sta.active(True)
            self.sta.connect(self.ssid, self.password)
            self.t_try = now
        except OSError as e:
            self._failed(now, "connect: %s" % e)

    def _attempt(self, now, t_try):
        sta = self.sta
        if sta.isconnected():
            self._connected(now)
            return
        code = sta.status()
        waited = time.ticks_diff(now, t_try)
        if code not in _FATAL and waited < self.timeout_ms:
            if self.status["mode"] != "ap":  # in AP mode feed() blinks
                self.led(not self.led())
            return
        self.t_try = None
        try:
            sta.disconnect()
        except OSError:
            pass
        self._failed(now, "station %r: %s after %d ms" % (self.ssid, _status_name(code), waited))

    def _failed(self, now, why):
        self.failed += 1
        if self.status["mode"] == "ap":
            wait = self.retry_ms
            self.sta.active(False)  # keep the access point's channel steady
        elif self.failed > self.retries:
            self.access_point("%s (%d attempts)" % (why, self.failed))
            wait = self.retry_ms
        else:
            wait = min(self.backoff_ms << (self.failed - 1), BACKOFF_CAP_MS)
        self.t_next = time.ticks_add(now, wait) if wait else None

    def _connected(self, now):
        st = self.status
        self.t_try = self.t_next = None
        self.failed = 0
        if self.t_down is not None:
            st["down_ms"] += time.ticks_diff(now, self.t_down)
            st["reconnects"] += 1
            self.t_down = None
        if self.ap is not None:
            self.ap.active(False)  # the home network is back: station mode only
            self.ap = None
        st.update(mode="station", wifi="connected", reason=None, ssid=self.ssid,
                  ip=self.sta.ifconfig()[0])
        self.led(True)
        print("board: station mode, ip %s" % st["ip"])

    def access_point(self, reason):
        if self.sta is not None:
            self.sta.active(False)  # free the radio for the access point
        cfg = self.ap_cfg
        ssid = cfg.get("ssid")
        if not isinstance(ssid, str) or not ssid:
            ssid = AP_DEFAULTS["ssid"]
        password = cfg.get("password")
        if not isinstance(password, str) or (password and len(password) < 8):
            # WPA2 needs 8+ characters: a broken password gets the documented default,
            # never an open network.
            password = AP_DEFAULTS["password"]
        ap = self.ap = network.WLAN(network.AP_IF)
        ap.active(True)
        channel = _int(cfg.get("channel"), 6)
        if password:
            ap.config(ssid=ssid, key=password, security=network.AUTH_WPA2_PSK, channel=channel)
        else:
            ap.config(ssid=ssid, security=network.AUTH_OPEN, channel=channel)
        self.status.update(mode="ap", wifi="access point", ssid=ssid, ip=ap.ifconfig()[0],
                           reason=reason)
        print("board: ap mode, ip %s (%s)" % (self.status["ip"], reason))

    def report(self, out):
        """Fill /stats "board" with what only the radio knows now."""
        if self.t_down is not None:
            out["down_ms"] += time.ticks_diff(time.ticks_ms(), self.t_down)
        if out["wifi"] == "connected":
            try:
                out["rssi"] = self.sta.status("rssi")
            except (OSError, ValueError):
                pass
