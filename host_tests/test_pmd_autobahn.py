"""A handful of the Autobahn testsuite's permessage-deflate cases (12.*, 13.*) against the
firmware at 110 KiB through tools/autobahn.py (`make autobahn` runs them all). The suite runs
on Python 2.7 only: skipped where there is none."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import autobahn  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Small messages (1000 each), every offer family of 13.* (several offers in 13.7), and
# fragmented compressed messages (12.*.11: 8 KiB in 256-byte frames).
# make sim's configuration (9 slots, one inflater, 110k): the first offer loads pmd.py's
# code beside the reserve of the slots still free (pmdgate.offer).
SERVER = {}
CASES = ["12.1.1", "12.2.3", "12.5.11", "13.1.2", "13.2.1", "13.3.1", "13.4.1", "13.5.2", "13.6.1", "13.7.3"]


def test_autobahn_compression_cases_pass(tmp_path):
    try:
        if autobahn.ensure_wstest() is None:
            pytest.skip("the Autobahn testsuite needs Python 2.7 (pyenv install 2.7.18)")
    except subprocess.CalledProcessError as e:
        pytest.skip("the Autobahn testsuite could not be installed into .venv-autobahn: %s" % e)
    results = autobahn.run_cases(CASES, str(tmp_path), heap="110k", server=SERVER)
    assert sorted(results) == sorted(CASES)
    bad = {c: r for c, r in results.items() if r[0] not in autobahn.PASSING or r[1] not in autobahn.PASSING}
    assert not bad, bad
