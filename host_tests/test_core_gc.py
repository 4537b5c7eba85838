"""When the runtime runs gc.collect(), as docs/API.md says: with `gc_collect`, once at the
housekeeping tick after a teardown; never because a message was large; at every /stats.
On CPython through the fake socket layer, with ringws.compat.collect counted."""
import asyncio
import os
import re

import pytest

from ringws import compat
from ringws.frames import OP_BINARY
from test_core_server_fake import close_handshake, run, until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def collections(monkeypatch):
    calls = []
    monkeypatch.setattr(compat, "collect", lambda: calls.append(1))
    return calls


@pytest.mark.parametrize("enabled", [True, False])
def test_collect_after_teardown_only(collections, enabled):
    async def scenario(ctx):
        c = await ctx.client().handshake()
        for size in (100, 5000, 20000):  # up to many times max_message, streamed
            c.send(OP_BINARY, b"x" * size)
            assert len((await c.message())[1]) == size
        await asyncio.sleep(0.1)  # ten housekeeping ticks
        assert collections == []  # not after large messages, not on a timer
        await close_handshake(c)
        if enabled:
            await until(lambda: collections, 1, "a collection after the teardown")
            await asyncio.sleep(0.1)
            assert len(collections) == 1  # once, not at every tick
        else:
            await asyncio.sleep(0.1)
            assert collections == []

    run(scenario, cfg={"gc_collect": enabled})


def test_stats_collects_first(collections):
    async def scenario(ctx):
        ctx.srv.stats()
        assert len(collections) == 1

    run(scenario)


def test_api_doc_says_what_gc_collect_does():
    with open(os.path.join(ROOT, "docs", "API.md")) as f:
        row = re.search(r"^\| `gc_collect` \|(.*)$", f.read(), re.M).group(1)
    assert "teardown" in row and "large message" not in row, row
