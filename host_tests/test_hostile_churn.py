"""10,000 connect/close cycles against the firmware under the unix port, mixing clean
WebSocket closes, resets (SO_LINGER 0), half-closed sockets, silent connects and HTTP
requests. Afterwards slots, connections, file descriptors and mem_alloc (after
gc.collect()) must equal the baseline, and every cycle must be accounted for in /stats.

RINGWS_CHURN=N changes the number of cycles (tools/soak.py runs longer mixes).
"""
import os
import time

import pytest

from churnmix import KINDS, churn
from conftest import assert_baseline
from fwrun import Firmware
from wspeer import echo_roundtrip

pytestmark = pytest.mark.slow

CYCLES = int(os.environ.get("RINGWS_CHURN", "10000"))
SLOTS = 4
WORKERS = 3  # fewer than the slots: a cycle never has to be refused


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("churn") / "fw",
                 server={"max_connections": SLOTS, "handshake_timeout_ms": 2000}).start()
    yield f
    f.stop()


@pytest.mark.timeout(240)
def test_churn_returns_every_resource(fw):
    echo_roundtrip(fw.port)
    churn(fw.port, 60)  # warm every path once (lazy imports, interned names)
    base = fw.resources()
    st0 = fw.stats()
    t0 = time.monotonic()
    counts, errors = churn(fw.port, CYCLES)
    took = time.monotonic() - t0
    assert not errors, errors
    assert fw.alive(), fw.log()
    assert sum(counts.values()) == CYCLES
    assert counts.get("refused", 0) == 0, counts
    after = assert_baseline(fw, base, what="after %d cycles" % CYCLES)
    st1 = fw.stats()
    closed = {k: st1["closed"][k] - st0["closed"][k] for k in st1["closed"]}
    # Every connection ended exactly once, with the cause its client gave it. (+1 http:
    # the /stats request that read st1 counts itself only on the next read.)
    per_kind = CYCLES // len(KINDS)
    assert closed["normal"] >= per_kind
    assert closed["peer_reset"] >= 2 * per_kind  # resets and half-closes
    assert sum(closed.values()) >= CYCLES
    print("\nchurn: %d cycles in %.1f s; %s; closed %s; base %s; after %s"
          % (CYCLES, took, counts, {k: v for k, v in closed.items() if v}, base, after))
    assert echo_roundtrip(fw.port, b"still serving") == b"still serving"
