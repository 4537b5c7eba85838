"""compat.wait_readable / wait_writable under the real MicroPython interpreter, on real
sockets: the task parks on asyncio's poller entry for the socket, and a connection (the
owner) keeps that entry between waits instead of asyncio making a list per wait.

Checked here: the entry is kept and reused, a wait with an owner allocates less than one
without, reader and writer can wait on one socket at once, a waiter cancelled while parked
is never woken through the kept entry, and drop_entry() leaves nothing behind.
"""
import json
import os
import subprocess

import pytest

from conftest import FIRMWARE, ROOT, free_port

pytestmark = pytest.mark.timeout(60)

MP_SCRIPT = r"""
import sys
sys.path.insert(0, %(fw)r)
import asyncio, gc, json, socket
from asyncio import core
from ringws import compat

ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
PORT = %(port)d
ls.bind(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
ls.listen(4)


class Owner:
    pollent = None


def pair():
    # A connected pair on 127.0.0.1: (client, server side, non-blocking).
    addr = socket.getaddrinfo("127.0.0.1", PORT)[0][-1]
    c = socket.socket()
    c.connect(addr)
    s, _ = ls.accept()
    s.setblocking(False)
    return c, s


out = {}
buf = bytearray(64)


waits = [0]


async def read_n(s, n, owner):
    got = 0
    while got < n:
        r = s.readinto(buf, 64)
        if r is None:
            waits[0] += 1
            await compat.wait_readable(s, owner)
            continue
        got += r
    return got


async def feed(c, n):
    for _ in range(n):
        c.send(b"x")
        await asyncio.sleep_ms(0)


async def per_wait(owner, n):
    # Bytes allocated per wait, collector paused: n one-byte messages, one wait each.
    c, s = pair()
    t = asyncio.create_task(read_n(s, n, owner))
    await asyncio.sleep_ms(0)  # parked once, so a kept entry exists before counting
    gc.collect()
    gc.disable()
    w = waits[0]
    a = gc.mem_alloc()
    await feed(c, n)
    got = await t
    d = gc.mem_alloc() - a
    w = waits[0] - w
    gc.enable()
    c.close()
    s.close()
    return got, d / w


async def main():
    owner = Owner()
    got, with_owner = await per_wait(owner, 200)
    ent = owner.pollent
    got2, without = await per_wait(None, 200)
    out["got"] = [got, got2]
    out["per_wait"] = [with_owner, without]
    out["kept"] = ent is not None and ent is owner.pollent
    # The owner's entry was given back by asyncio when the last wake emptied it.
    out["map_after_waits"] = len(core._io_queue.map)

    # Reader and writer parked on one socket: the writer is woken (writable), the
    # reader stays parked until data comes, through the one entry.
    c, s = pair()
    rd = asyncio.create_task(read_n(s, 3, owner))
    await asyncio.sleep_ms(0)
    woke = []

    async def writer():
        await compat.wait_writable(s, owner)
        woke.append("w")

    wt = asyncio.create_task(writer())
    await asyncio.sleep_ms(20)
    out["writer_woke_reader_parked"] = woke == ["w"] and not rd.done()
    c.send(b"abc")
    out["reader_got"] = await rd
    c.close()
    s.close()

    # A reader cancelled while parked, then the same owner on a new connection: the
    # cancelled task must not come back through the kept entry.
    c, s = pair()
    resumed = []

    async def doomed():
        try:
            await compat.wait_readable(s, owner)
            resumed.append("doomed")
        except asyncio.CancelledError:
            resumed.append("cancelled")

    t = asyncio.create_task(doomed())
    await asyncio.sleep_ms(0)
    t.cancel()
    await asyncio.sleep_ms(0)
    compat.drop_entry(owner)
    c.close()
    s.close()
    out["dropped"] = [x is None for x in owner.pollent]
    c2, s2 = pair()
    r2 = asyncio.create_task(read_n(s2, 2, owner))
    await asyncio.sleep_ms(0)
    c2.send(b"hi")
    out["after_cancel"] = [await r2, resumed]
    c2.close()
    s2.close()

    # drop_entry with a waiter still parked takes the socket off the poller.
    c, s = pair()
    t = asyncio.create_task(read_n(s, 1, owner))
    await asyncio.sleep_ms(0)
    out["parked_in_map"] = id(s) in core._io_queue.map
    t.cancel()
    await asyncio.sleep_ms(0)
    compat.drop_entry(owner)
    out["map_at_end"] = len(core._io_queue.map)
    c.close()
    s.close()


asyncio.run(main())
print(json.dumps(out))
"""


def run_mp(mp, tmp_path):
    script = MP_SCRIPT % {"fw": str(FIRMWARE), "port": free_port()}
    path = tmp_path / "waits_case.py"
    path.write_text(script)
    r = subprocess.run([mp, "-X", "heapsize=2M", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    assert os.path.exists(mp), "no MicroPython: run make test (it installs it)"
    return run_mp(mp, tmp_path_factory.mktemp("waits"))


def test_waits_wake_on_data(result):
    assert result["got"] == [200, 200]


def test_the_owner_keeps_one_entry_and_waits_allocate_less(result):
    assert result["kept"]
    with_owner, without = result["per_wait"]
    # asyncio's own entry is a 3- or 4-item list: at least 32 B on a 32-bit port, more here.
    assert with_owner <= without - 32, result["per_wait"]
    assert result["map_after_waits"] == 0


def test_reader_and_writer_wait_on_one_socket(result):
    assert result["writer_woke_reader_parked"]
    assert result["reader_got"] == 3


def test_a_cancelled_waiter_never_comes_back_through_the_kept_entry(result):
    assert result["dropped"] == [True] * len(result["dropped"])
    got, resumed = result["after_cancel"]
    assert got == 2
    assert resumed == ["cancelled"]


def test_drop_entry_takes_a_parked_socket_off_the_poller(result):
    assert result["parked_in_map"]
    assert result["map_at_end"] == 0
