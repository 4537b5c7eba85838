# pyright: reportAttributeAccessIssue=false
# (asyncio.core and the CPython branch's asyncio: see fit_check's KNOWN_STUB_GAPS.)
# What ringws.aio needs that differs between MicroPython and CPython asyncio (loaded only
# with ringws.aio):
#   when_done(task, obj)  obj(task, exc) when the task ends; exc is a StopIteration when it
#                         returned. MicroPython calls a task's callable `state` at its end
#                         (as its gather() does): no wrapper coroutine kept per connection.
#   suspend()             park the current task until wake(task): what its coroutine then
#                         yields to the loop
from ringws.compat import MICROPYTHON


if MICROPYTHON:
    from asyncio import core as _core

    from ringws.compat import _IDLE

    def when_done(task, obj):
        task.state = obj

    def suspend():
        _core.cur_task.data = _IDLE  # on no queue: the loop leaves it alone (compat.park)

else:
    import asyncio

    from ringws.compat_cpython import _parked

    def when_done(task, obj):
        task.add_done_callback(lambda t: obj(t, asyncio.CancelledError() if t.cancelled()
                                             else t.exception() or StopIteration()))

    def suspend():
        # compat_cpython.park() without its coroutine: the future the task waits on.
        fut = asyncio.get_running_loop().create_future()
        fut._asyncio_future_blocking = True
        _parked[asyncio.current_task()] = fut
        return fut
