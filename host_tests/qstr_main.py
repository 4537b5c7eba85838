# Test entry point (fwrun.Firmware(entry=...) copies it into the build), for
# test_fit_qstrs.py: main.py plus /qstrs, an HTTP route that prints the interpreter's
# interned-name table (micropython.qstr_info(): "n_pool=.., n_qstr=N, ...") to the log.
import micropython


def _qstrs(srv, req):
    micropython.qstr_info()
    return 200, "text/plain", "printed\n"


def _hook(srv, cfg):
    srv.http("/qstrs", _qstrs)


import launch  # noqa: E402

launch.after_install = _hook
del launch
import main  # noqa: E402,F401  (runs the firmware's main.py, as the board does)
