"""The Autobahn testsuite's fuzzing client against /echo of the firmware under the unix port.

    make autobahn                              12.* and 13.* (permessage-deflate), 110k
    make autobahn CASES="1.*,2.*,12.1.1"       any case set
    tools/autobahn.py --cases 12.1.1 --heap 110k --set max_connections=9 --out DIR

The testsuite (autobahntestsuite, wstest) runs on Python 2.7 only: it is installed into
.venv-autobahn, a virtualenv made from pyenv's 2.7.18 (~/.pyenv/versions/2.7.18) when that
interpreter exists; without one the tool says so and exits 2. A fresh firmware build is
started in `make sim`'s configuration (the host board: compression on with its one
inflater, 9 slots, 110k), the cases run, and the counts per behaviour are printed (reports: DIR/reports/index.json and
HTML). Exit 0 when every case is OK, NON-STRICT or INFORMATIONAL.

Not part of `make test`: 12.* and 13.* send 216 x 1000 messages (up to 128 KiB each) and
take about an hour and a half (Makefile: make autobahn).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fwrun import ROOT, Firmware  # noqa: E402

PY27 = os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python")
VENV = os.path.join(ROOT, ".venv-autobahn")
WSTEST = os.path.join(VENV, "bin", "wstest")
PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
DEFAULT_CASES = "12.*,13.*"


def python27():
    """A Python 2.7 interpreter: pyenv's 2.7.18, else python2.7 on PATH, else None."""
    if os.path.exists(PY27):
        return PY27
    for d in os.environ.get("PATH", "").split(os.pathsep):
        exe = os.path.join(d, "python2.7")
        if os.path.exists(exe):
            return exe
    return None


def ensure_wstest():
    """The wstest executable, installing the testsuite first if needed; None without Python 2.7."""
    if os.path.exists(WSTEST):
        return WSTEST
    py = python27()
    if py is None:
        return None
    # virtualenv 20.15.1: the last that still makes Python 2.7 environments.
    subprocess.check_call([py, "-m", "pip", "install", "--user", "--quiet", "virtualenv==20.15.1"])
    subprocess.check_call([py, "-m", "virtualenv", "--quiet", VENV])
    subprocess.check_call([os.path.join(VENV, "bin", "pip"), "install", "--quiet", "autobahntestsuite"])
    return WSTEST


def run_cases(cases, out, heap="110k", server=None, timeout=None):
    """Run the cases against a fresh firmware; {case: (behavior, behaviorClose)}."""
    wstest = ensure_wstest()
    if wstest is None:
        raise RuntimeError("the Autobahn testsuite needs Python 2.7: install it with "
                           "`pyenv install 2.7.18` (looked for %s and python2.7 on PATH)" % PY27)
    # As make sim: the host board's one inflater, 9 slots.
    server = dict({"inflaters": 1, "max_connections": 9}, **(server or {}))
    os.makedirs(out, exist_ok=True)
    fw = Firmware(os.path.join(out, "fw"), heap=heap, server=server).start()
    try:
        spec = {"outdir": os.path.join(out, "reports"),
                "servers": [{"agent": "ringws", "url": fw.ws_url("/echo")}],
                "cases": cases, "exclude-cases": [], "exclude-agent-cases": {}}
        with open(os.path.join(out, "spec.json"), "w") as f:
            json.dump(spec, f)
        with open(os.path.join(out, "wstest.log"), "w") as log:
            subprocess.run([wstest, "-m", "fuzzingclient", "-s", "spec.json"], cwd=out, stdout=log,
                           stderr=subprocess.STDOUT, timeout=timeout, check=True)
    finally:
        fw.stop()
    with open(os.path.join(out, "reports", "index.json")) as f:
        index = json.load(f)
    results = {}
    for agent in index.values():
        for case, r in agent.items():
            results[case] = (r["behavior"], r["behaviorClose"])
    return results


def case_key(case):
    return tuple(int(x) for x in case.split("."))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated case patterns (%(default)s)")
    ap.add_argument("--heap", default="110k")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="a server setting")
    ap.add_argument("--out", default=None, help="folder for the build, spec and reports")
    args = ap.parse_args()
    server = {}
    for item in args.set:
        key, _, value = item.partition("=")
        server[key] = json.loads(value)
    out = args.out or tempfile.mkdtemp(prefix="autobahn-")
    try:
        results = run_cases([c.strip() for c in args.cases.split(",") if c.strip()], out, args.heap, server)
    except RuntimeError as e:
        print("autobahn: %s" % e, file=sys.stderr)
        return 2
    counts = {}
    for case in sorted(results, key=case_key):
        behavior, close = results[case]
        counts[behavior] = counts.get(behavior, 0) + 1
        if behavior not in PASSING or close not in PASSING:
            print("%-10s %s (close: %s)" % (case, behavior, close))
    print("autobahn: %d cases at %s: %s (reports in %s)" % (
        len(results), args.heap, ", ".join("%s %d" % kv for kv in sorted(counts.items())),
        os.path.join(out, "reports")))
    bad = [c for c, (b, cl) in results.items() if b not in PASSING or cl not in PASSING]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
