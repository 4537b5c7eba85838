"""compat.park / compat.wake under the real MicroPython interpreter.

A slot's reader task parks between connections and the accept loop wakes it for the
next one (server.Server._start). Checked here: a woken task resumes once; waking a task
that is not parked (sleeping, or busy) leaves it alone, so it is never queued twice; a
parked task can be cancelled like any waiting one; and parking and waking allocate
nothing.
"""
import json
import os
import subprocess

import pytest

from conftest import FIRMWARE, ROOT

pytestmark = pytest.mark.timeout(60)

MP_SCRIPT = r"""
import sys
sys.path.insert(0, %(fw)r)
import asyncio, gc, json, time
from ringws import compat

out = {"resumed": 0, "slept": 0}


async def parker(n):
    for _ in range(n):
        await compat.park()
        out["resumed"] += 1
    return "done"


async def sleeper():
    t = time.ticks_ms()
    await asyncio.sleep_ms(200)
    out["slept"] += 1
    out["slept_ms"] = time.ticks_diff(time.ticks_ms(), t)


async def main():
    # Woken tasks resume, once per wake.
    t = asyncio.create_task(parker(3))
    await asyncio.sleep_ms(5)
    out["parked_before_wake"] = out["resumed"]
    for _ in range(3):
        compat.wake(t)
        compat.wake(t)  # twice in a row: the second finds it queued, not parked
        await asyncio.sleep_ms(5)
    out["result"] = await t

    # A task that is not parked is left alone.
    s = asyncio.create_task(sleeper())
    await asyncio.sleep_ms(5)
    compat.wake(s)
    await asyncio.sleep_ms(5)
    # (Its deadline comes before this one's: it has run by then, whatever the load.)
    await asyncio.sleep_ms(300)
    out["slept_late"] = out["slept"]

    # A parked task is cancelled like a waiting one.
    c = asyncio.create_task(parker(1))
    await asyncio.sleep_ms(5)
    c.cancel()
    try:
        await c
        out["cancel"] = "not raised"
    except asyncio.CancelledError:
        out["cancel"] = "raised"

    # No allocation per park and wake.
    p = asyncio.create_task(parker(1000))
    await asyncio.sleep_ms(0)
    for _ in range(10):
        compat.wake(p)
        await asyncio.sleep_ms(0)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(200):
        compat.wake(p)
        await asyncio.sleep_ms(0)
    out["bytes_per_cycle"] = (gc.mem_alloc() - a) / 200
    gc.enable()
    p.cancel()
    print(json.dumps(out))


asyncio.run(main())
"""


def test_park_wake_cancel_under_micropython(tmp_path):
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    script = tmp_path / "park.py"
    script.write_text(MP_SCRIPT % {"fw": str(FIRMWARE)})
    p = subprocess.run([mp, "-X", "heapsize=2M", str(script)], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["parked_before_wake"] == 0
    assert out["result"] == "done" and out["resumed"] >= 3
    # Timed by its own clock: a machine too loaded to run this process for a while makes
    # no sleep end early.
    assert out["slept_ms"] >= 200, "a sleeping task was woken early"
    assert out["slept_late"] == 1, "the sleeping task did not run exactly once"
    assert out["cancel"] == "raised"
    # The parker of 1000 ran 210 of its cycles: allocation-free ones.
    assert out["bytes_per_cycle"] < 4, out
