# The one difference ringws.aio needs between MicroPython and CPython asyncio (loaded only
# with ringws.aio): when a task ends, obj(task, exc) is called; exc is a StopIteration
# when the task returned. MicroPython calls a task's callable `state` at its end (as its
# gather() does): no wrapper coroutine, whose frame would stay alive per connection.
from ringws.compat import MICROPYTHON

if MICROPYTHON:

    def when_done(task, obj):
        task.state = obj

else:
    import asyncio

    def when_done(task, obj):
        task.add_done_callback(lambda t: obj(t, asyncio.CancelledError() if t.cancelled()
                                             else t.exception() or StopIteration()))
