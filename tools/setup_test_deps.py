"""Install what `make test` needs beyond the venv (system packages such as chromium).

Each helper module registers its own step; steps are idempotent and quick when done.
"""
import sys


def main():
    return 0


if __name__ == "__main__":
    sys.exit(main())
