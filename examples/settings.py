# A settings form: GET / shows the form, POST / saves it to settings.json, and the next
# start-up (a reset) runs with it: an app reads its settings in install(), as Form does.
#
#   make sim APP=examples/settings.py      then open http://127.0.0.1:8080/
# The body comes whole as req.body (a memoryview, valid during the call); one larger than
# a slot gets 413 from the server. A missing or half-written file: the defaults.
import json

FILE = "settings.json"
DEFAULTS = {"name": "ringws", "period_ms": 1000}

FORM = """<!doctype html><meta charset=utf-8><title>%s</title><p>%s<form method=post>
<p><label>Name <input name=name value="%s" maxlength=32 required></label>
<p><label>Period (ms) <input name=period_ms type=number value="%d" min=100 max=60000></label>
<p><button>Save</button></form>"""


def load():
    try:
        with open(FILE) as f:
            return dict(DEFAULTS, **json.load(f))
    except (OSError, ValueError, TypeError):
        return dict(DEFAULTS)


def unquote(s):
    """A form field's value: '+' is a space, %XX a byte (ValueError if malformed)."""
    parts = s.replace("+", " ").split("%")
    out = parts[0].encode()
    for p in parts[1:]:
        if len(p) < 2:
            raise ValueError("bad %-escape")
        out += bytes((int(p[:2], 16),)) + p[2:].encode()
    return str(out, "utf-8")


def parse(body):
    """The form (application/x-www-form-urlencoded), checked: a dict of settings."""
    fields = {}
    for part in str(body, "utf-8").split("&"):
        key, _, value = part.partition("=")
        fields[unquote(key)] = unquote(value)
    name = fields.get("name", "").strip()
    period = int(fields.get("period_ms", ""))
    if not 0 < len(name) <= 32 or not 100 <= period <= 60000:
        raise ValueError("name: 1 to 32 characters; period_ms: 100 to 60000")
    return {"name": name, "period_ms": period}


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


class Form:
    def __init__(self):
        self.running = load()   # read once, at start-up: what this run uses

    def page(self, srv, req):   # GET and POST /
        note = ""
        if req.method == "POST":
            try:
                saved = parse(req.body)
            except (ValueError, UnicodeError) as e:
                return 400, "text/plain", "not saved: %s\n" % e
            with open(FILE, "w") as f:
                json.dump(saved, f)
            note = "Saved: in use after the next reset."
        s = load()
        return 200, "text/html; charset=utf-8", FORM % (
            esc(self.running["name"]), note, esc(s["name"]), s["period_ms"])

    def settings(self, srv, req):   # GET /settings: what this run uses, as JSON
        return 200, "application/json", json.dumps(self.running)


def install(srv, cfg, board):
    form = Form()
    srv.http("/", form.page, methods=("GET", "POST"))   # HEAD too, as for every GET route
    srv.http("/settings", form.settings)
