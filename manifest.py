# Freeze ringws into a custom MicroPython firmware (bytecode in flash: no RAM spent on
# loading the library, no .mpy files on the filesystem). From a MicroPython checkout:
#
#   cd ports/esp32
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/ringws/manifest.py
#
# Then deploy only main.py, www/ and config.json (or keep using `make deploy`: frozen
# modules are found after the filesystem, so uploaded .mpy files still win).
include("$(PORT_DIR)/boards/manifest.py")

# The library, without the CPython-only halves of the compat layer.
package(
    "ringws",
    files=[
        "__init__.py", "access.py", "aio.py", "body.py", "compat.py", "compat_aio.py",
        "compat_inflate.py", "config.py", "connection.py", "faults.py", "frames.py",
        "handshake.py", "http.py", "jsonout.py", "kernels.py", "pmd.py", "pmdgate.py", "pmdoffer.py",
        "protocol.py", "refusal.py", "relay.py", "ring.py", "server.py", "slot.py",
        "startstop.py", "static.py", "tls.py", "tlscfg.py",
    ],
    base_path="firmware",
)
# The platform layer and the default application.
module("launch.py", base_path="firmware")
module("board.py", base_path="firmware")
module("wifi.py", base_path="firmware")
package("app", base_path="firmware")
