"""compat.wait_readable / wait_writable under the real MicroPython interpreter, on real
sockets: the task parks on asyncio's poller entry for the socket, and a connection (the
owner) keeps that entry, and its socket on the poller, between waits: asyncio would make
a new list and register the socket again (a 32 B poller record) for every wait.

Checked here: the entry is kept and reused and the socket registered once, a wait with an
owner allocates neither object, reader and writer can wait on one socket at once, a
waiter cancelled while parked is let go and never woken, a reset while nobody waits takes
the socket off the poller (no busy loop) and the next wait still sees it, and
drop_entry() leaves nothing behind.
"""
import errno
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


class CountingPoller:
    # asyncio's select.poll, with its calls counted.
    def __init__(self, p):
        self.p = p
        self.n = {"register": 0, "unregister": 0, "modify": 0, "ipoll": 0}

    def register(self, s, mask):
        self.n["register"] += 1
        self.p.register(s, mask)

    def unregister(self, s):
        self.n["unregister"] += 1
        self.p.unregister(s)

    def modify(self, s, mask):
        self.n["modify"] += 1
        self.p.modify(s, mask)

    def ipoll(self, dt):
        self.n["ipoll"] += 1
        return self.p.ipoll(dt)


poller = CountingPoller(core._io_queue.poller)
core._io_queue.poller = poller


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
    first = owner.pollent if owner is not None else None
    gc.collect()
    gc.disable()
    w = waits[0]
    a = gc.mem_alloc()
    await feed(c, n)
    got = await t
    d = gc.mem_alloc() - a
    w = waits[0] - w
    gc.enable()
    registered = id(s) in core._io_queue.map
    if owner is not None:
        out["kept"] = first is not None and owner.pollent is first
        compat.drop_entry(owner)
    c.close()
    s.close()
    return got, d / w, registered, w


async def main():
    owner = Owner()
    r0 = poller.n["register"]
    got, with_owner, kept_on, _ = await per_wait(owner, 200)
    out["registers_with_owner"] = poller.n["register"] - r0
    r0 = poller.n["register"]
    got2, without, without_on, waits_without = await per_wait(None, 200)
    out["registers_without"] = [poller.n["register"] - r0, waits_without]
    out["got"] = [got, got2]
    out["per_wait"] = [with_owner, without]
    # Between waits the owner's socket stayed on the poller; a socket without an owner
    # was taken off by asyncio when its last waiter woke.
    out["on_poller_between_waits"] = [kept_on, without_on]
    out["map_after_waits"] = len(core._io_queue.map)

    # The peer resets the connection while nobody waits: an empty mask still reports
    # the error and hangup, so the socket must leave the poller at once, not spin the
    # loop until the next wait.
    c, s = pair()
    rd = asyncio.create_task(read_n(s, 1, owner))
    await asyncio.sleep_ms(0)
    c.send(b"z")
    await rd  # woken and done: s is on the poller with nobody waiting
    idle = id(s) in core._io_queue.map
    c.setsockopt(socket.SOL_SOCKET, 13, b"\x01\0\0\0\0\0\0\0")  # SO_LINGER 0 on Linux
    c.close()
    p0 = poller.n["ipoll"]
    await asyncio.sleep_ms(50)
    out["hangup_while_idle"] = [idle, poller.n["ipoll"] - p0, id(s) in core._io_queue.map]
    # and the next wait on it still wakes, to see the reset
    async def read_eof():
        try:
            while s.readinto(buf, 64) is None:
                await compat.wait_readable(s, owner)
        except OSError as e:
            return compat.errno_of(e)
        return "no reset"

    out["eof_after_hangup"] = await asyncio.wait_for_ms(read_eof(), 1000)
    compat.drop_entry(owner)
    s.close()

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
    old = owner.pollent
    compat.drop_entry(owner)
    c.close()
    s.close()
    # The owner let go of the entry, and the entry holds no task (the cancelled one
    # would keep its frames alive), only the closed socket.
    out["dropped"] = [owner.pollent is None] + [x is None for x in old[:-1]]
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
    out["kept_at_end"] = len(compat._kept)
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


def test_the_owner_keeps_one_entry_and_its_socket_on_the_poller(result):
    assert result["kept"]
    assert result["on_poller_between_waits"] == [True, False]
    # 200 messages each: asyncio registers the socket again for every wait
    assert result["registers_with_owner"] == 1
    registers, waits = result["registers_without"]
    assert registers >= waits >= 50, result["registers_without"]
    assert result["map_after_waits"] == 0


def test_a_wait_with_an_owner_allocates_neither_list_nor_poller_record(result):
    with_owner, without = result["per_wait"]
    # asyncio's entry (a 3- or 4-item list) and select.poll's record are 16 B or more
    # each on a 32-bit port, 32 B or more here: a wait with an owner has neither.
    assert with_owner < 16, result["per_wait"]
    assert without >= with_owner + 64, result["per_wait"]


def test_a_reset_while_nobody_waits_leaves_the_poller_without_a_busy_loop(result):
    on_poller, polls_in_50ms, still_on = result["hangup_while_idle"]
    assert on_poller
    # A busy loop polls thousands of times in 50 ms; a sleeping one a handful.
    assert polls_in_50ms < 20, result["hangup_while_idle"]
    assert not still_on
    assert result["eof_after_hangup"] == errno.ECONNRESET


def test_reader_and_writer_wait_on_one_socket(result):
    assert result["writer_woke_reader_parked"]
    assert result["reader_got"] == 3


def test_a_cancelled_waiter_is_let_go_and_never_comes_back(result):
    assert result["dropped"] == [True] * len(result["dropped"])
    got, resumed = result["after_cancel"]
    assert got == 2
    assert resumed == ["cancelled"]


def test_drop_entry_takes_a_parked_socket_off_the_poller(result):
    assert result["parked_in_map"]
    assert result["map_at_end"] == 0
    assert result["kept_at_end"] == 0
