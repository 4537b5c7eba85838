#!/usr/bin/env python3
"""Build mip packages of the ringws library as bytecode, one per mpy arch.

    tools/dist.py [--out dist] [--arch xtensawin --arch ...]
    make dist
    mpremote mip install dist/xtensawin/package.json      (or its http(s) URL)

The top-level package.json installs sources, which the board compiles into its heap at
import: meant for boards with PSRAM (on the virtual board at 110k, a 4-slot echo app has
37,632 B free from sources, 40,672 from bytecode). Each dist/<arch>/package.json
lists the same modules as .mpy compiled with mpy-cross for that arch (viper code becomes
native code, so the arch must be the board's: xtensawin for ESP32/S2/S3, rv32imc for the
C3/C6, x64 for the unix port and tools/virtual_board.py, also linked as dist/host). URLs are relative to the
package.json, so the folder can be installed from a path or served over HTTP as it is;
mip puts the files under the board's lib folder (/lib on an ESP32).
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boards  # noqa: E402
import build  # noqa: E402

ROOT = build.ROOT
LIB = os.path.join(ROOT, "firmware", "ringws")


def default_arches():
    """Every board file's arch, the host's (x64) included, each once."""
    out = []
    for name in sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "boards"))
                       if f.endswith(".json")):
        arch = boards.load(name)["mpy_arch"]
        if arch not in out:
            out.append(arch)
    return out


def library_modules():
    """ringws/*.py that go onto a board (the *_cpython.py halves are host-only)."""
    return sorted(f for f in os.listdir(LIB)
                  if f.endswith(".py") and not f.endswith("_cpython.py"))


def build_arch(arch, out, version):
    """dist/<arch>/: ringws/*.mpy and a package.json listing them; returns its path."""
    folder = os.path.join(out, arch)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(os.path.join(folder, "ringws"))
    urls = []
    for name in library_modules():
        rel = "ringws/" + name[:-3] + ".mpy"
        # No line-number tables: they cost heap on a 110 KiB board (tools/boards.py's
        # source_lines); tracebacks still name the file (the .mpy, as build.py names it)
        # and the function.
        build.compile_file(os.path.join(LIB, name), os.path.join(folder, rel), arch, rel,
                           lines=False)
        urls.append([rel, rel])
    # mip reads only urls, deps and version; the description is for people.
    pkg = {"description": "ringws %s as .mpy for mpy arch %s (a 110 KiB heap imports "
                          "these; the .py package needs PSRAM)" % (version, arch),
           "urls": urls, "deps": [], "version": version}
    path = os.path.join(folder, "package.json")
    with open(path, "w") as f:
        json.dump(pkg, f, indent=2)
        f.write("\n")
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "dist"))
    ap.add_argument("--arch", action="append", help="mpy-cross arch (default: every board's)")
    args = ap.parse_args(argv)
    with open(os.path.join(ROOT, "package.json")) as f:
        version = json.load(f)["version"]
    host = boards.load("host")["mpy_arch"]
    for arch in args.arch or default_arches():
        path = build_arch(arch, args.out, version)
        if arch == host:  # dist/host/: the unix port's and virtual board's, by any arch name
            link = os.path.join(args.out, "host")
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(arch, link)
        size = sum(os.path.getsize(os.path.join(dirpath, n))
                   for dirpath, _, names in os.walk(os.path.dirname(path)) for n in names)
        print("%s  (%d modules, %d bytes)" % (os.path.relpath(path), len(library_modules()),
                                             size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
