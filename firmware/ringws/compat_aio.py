# pyright: reportAttributeAccessIssue=false
# (Waiter is a mixin whose _poll the subclass supplies; asyncio.core: see fit_check's
# KNOWN_STUB_GAPS.)
# What ringws.aio needs that differs between MicroPython and CPython asyncio (loaded only
# with ringws.aio):
#   when_done(task, obj)  obj(task, exc) when the task ends; exc is a StopIteration when it
#                         returned. MicroPython calls a task's callable `state` at its end
#                         (as its gather() does): no wrapper coroutine kept per connection.
#   Waiter                `await obj` for obj._poll(): its result, or AGAIN to park the task
#                         until wake(task). On MicroPython obj is its own iterator: nothing
#                         kept while it waits, no coroutine made per wait.
from ringws.compat import MICROPYTHON

AGAIN = object()

if MICROPYTHON:
    from asyncio import core as _core

    from ringws.compat import _IDLE

    def when_done(task, obj):
        task.state = obj

    class Waiter:
        def __iter__(self):
            return self

        def __next__(self):
            r = self._poll()
            if r is AGAIN:
                # Parked until wake(task), as compat.park() does, but without its shared
                # awaitable (another task may be suspended inside that one).
                _core.cur_task.data = _IDLE
                return None
            raise StopIteration(r)

else:
    import asyncio

    from ringws.compat import park

    def when_done(task, obj):
        task.add_done_callback(lambda t: obj(t, asyncio.CancelledError() if t.cancelled()
                                             else t.exception() or StopIteration()))

    class Waiter:
        def __await__(self):
            while True:
                r = self._poll()
                if r is not AGAIN:
                    return r
                yield from park().__await__()
