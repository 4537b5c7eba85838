# /echo: every message back with its type, any size.
#
# Messages that fit the slot come whole (on_message) and go back as one frame. Larger ones
# arrive piece by piece (on_fragment) and go back frame for frame (conn.relay): the reply
# has the same frames as the request, however large, through a ring of a few KiB. When the
# ring is full the handler says so (returns False): the runtime stops reading until the
# ring drains, so TCP flow control slows the sender instead of memory growing.


class EchoHandler:
    # on_fragment only relays: a large frame that arrived whole comes as one piece.
    whole_frames = True

    def on_message(self, conn, data, text):
        return conn.send(data, text)

    def on_fragment(self, conn, data, text, first, last):
        return conn.relay(data)
