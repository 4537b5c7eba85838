# Test entry point (fwrun.Firmware(entry=...) copies it into the build): main.py plus two
# srv.http routes that take request bodies, for test_http_bodies.py:
#   /form    GET, POST and PUT: answers "<method> <body length> <sha1 of the body>" (no
#            copy of the body: a 1 KB block may not be free on a heap cut up by traffic)
#   /upload  POST only: answers the body's length


import binascii  # noqa: E402
import hashlib  # noqa: E402


def _form(srv, req):
    digest = binascii.hexlify(hashlib.sha1(req.body).digest()).decode()
    return 200, "text/plain", "%s %d %s" % (req.method, len(req.body), digest)


def _upload(srv, req):
    return 200, "text/plain", "%d" % len(req.body)


def _hook(srv, cfg):
    srv.http("/form", _form, ("GET", "POST", "PUT"))
    srv.http("/upload", _upload, methods=("POST",))


import launch  # noqa: E402

launch.after_install = _hook
del launch
import main  # noqa: E402,F401  (runs the firmware's main.py, as the board does)
