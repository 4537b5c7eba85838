"""Install what `make test` needs beyond the venv (system packages such as chromium).

Each step is idempotent and quick when already done: `make test` calls this every time.

    tools/setup_test_deps.py [--check]     (--check: install nothing, exit 1 if missing)

The browser tests drive Debian's own chromium through Playwright's `executable_path`
(never `playwright install`, which downloads a browser from a CDN we cannot reach).
"""
import os
import shutil
import subprocess
import sys

# (what must exist, Debian packages that provide it)
APT_STEPS = [
    (("/usr/bin/chromium", "/usr/bin/chromedriver"), ("chromium", "chromium-driver")),
]


def _missing(paths):
    return [p for p in paths if not os.path.exists(p)]


def _run(cmd):
    print("setup_test_deps: " + " ".join(cmd), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(cmd, env=env).returncode


def apt_install(packages):
    if shutil.which("apt-get") is None:
        print("setup_test_deps: no apt-get; install %s yourself" % " ".join(packages))
        return 1
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    cmd = sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + list(packages)
    if _run(cmd) == 0:
        return 0
    # Package lists may be absent or stale on a fresh machine: refresh once, retry.
    _run(sudo + ["apt-get", "update", "-q"])
    return _run(cmd)


def main(argv=None):
    check_only = "--check" in (argv if argv is not None else sys.argv[1:])
    failed = 0
    for paths, packages in APT_STEPS:
        if not _missing(paths):
            continue
        if check_only:
            print("setup_test_deps: missing %s" % ", ".join(_missing(paths)))
            failed = 1
            continue
        if apt_install(packages) != 0 or _missing(paths):
            # Not fatal: the rest of the suite still runs, and the tests that need these
            # fail with a message naming what is missing.
            print("setup_test_deps: WARNING: could not install %s" % " ".join(packages))
    return failed


if __name__ == "__main__":
    sys.exit(main())
