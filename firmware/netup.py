# Start-up only (launch.forget drops it): the reset cause, and on a board with a `network`
# module its settings and the first connect, before the loop runs.
import time

try:
    import machine
except ImportError:  # (CPython)
    machine = None

POLL_MS = 100  # how often the station is polled before the loop runs


def _dict(value):
    # A missing or mistyped section reads as empty instead of failing boot.
    return value if isinstance(value, dict) else {}


def start(cfg, board):
    """board.bring_up: board is that module's globals, whose state (_status, _link, the
    watchdog's and the LED's) is set here."""
    cfg = cfg if isinstance(cfg, dict) else {}
    server = _dict(cfg.get("server"))
    status = board["_status"]
    status["reset_cause"] = reset_cause()
    if board["network"] is None:
        bind = server.get("host") or "127.0.0.1"
        status.update(mode="host", wifi="none", ip=bind, reason=cfg.get("config_error"))
        getenv = getattr(__import__("os"), "getenv", None)  # (the unix port's)
        return dict(status, bind=bind, stop=getenv is not None and getenv("RINGWS_STOP") == "stdin")
    board["_wdt_ms"], board["_led_pin"], board["_led_low"] = hardware(cfg)
    led = board["led"]
    led(False)
    status["mode"] = None
    link = board["_link"] = bring_up(cfg, status, led, board["feed"])
    return dict(status, bind=server.get("host") or "0.0.0.0",
                poll=(board["wifi"].RUN_POLL_MS, link.poll))


def reset_cause():
    """Why the board last reset, by machine's name for it (read once, at start-up)."""
    if machine is None or not hasattr(machine, "reset_cause"):
        return None
    cause = machine.reset_cause()
    for name in ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"):
        if getattr(machine, name, None) == cause:
            return name
    return str(cause)


def hardware(cfg):
    """(watchdog_ms, LED pin or None, LED active low) from the config; bad values: off."""
    ms = cfg.get("watchdog_ms")
    pin = cfg.get("led_pin")
    led = None
    if type(pin) is int:
        try:
            led = machine.Pin(pin, machine.Pin.OUT)
        except (ValueError, OSError):
            pass
    return (ms if type(ms) is int and ms > 0 else 0), led, bool(cfg.get("led_active_low"))


def bring_up(cfg, status, led, feed):
    """Station or access point before the loop runs; returns the Link to poll."""
    import network
    import wifi

    hostname = cfg.get("hostname")
    if not isinstance(hostname, str) or not hostname:
        hostname = "ringws"
    try:
        network.hostname(hostname)
    except (AttributeError, OSError, ValueError):
        pass
    status["hostname"] = hostname
    link = wifi.Link(status, led, _dict(cfg.get("wifi")), _dict(cfg.get("ap")))
    if cfg.get("config_error"):
        link.ssid = None  # a broken config.json: nothing to retry, the AP says why
        link.access_point("config: %s" % cfg["config_error"])
    elif link.ssid is None:
        link.access_point("no WiFi configured (wifi.ssid is empty)")
    else:
        # Before the loop: the same steps as later, with sleeps in between. feed(False)
        # keeps an armed watchdog fed and never arms one.
        link.start(time.ticks_ms())
        while status["mode"] is None:
            feed(False)
            time.sleep_ms(POLL_MS)
            link.poll(time.ticks_ms())
    return link
