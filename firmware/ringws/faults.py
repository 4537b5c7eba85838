# Why the protocol fails a connection or refuses a relay, and why a request head is refused:
# the texts, by number, read by compat.why("faults", i) (each call site quotes its text). Loaded
# for one failure and dropped after it: while peers keep to RFC 6455 and handlers relay pieces
# whole, the texts take no heap.
TEXTS = (
    "recv_buf must be at least %d bytes",  # 0
    "invalid UTF-8 in text message",  # 1
    "text message ends inside a character",  # 2
    "reserved bits set where no extension allows them",  # 3
    "reserved opcode %d",  # 4
    "client frames must be masked",  # 5
    "64-bit length with the top bit set",  # 6
    "fragmented control frame",  # 7
    "control frame longer than 125 bytes",  # 8
    "continuation frame without a message",  # 9
    "new message inside a fragmented one",  # 10
    "message larger than %d bytes",  # 11
    "a %d-byte piece can only be relayed unchanged (whole_frames)",  # 12
    "a whole frame is relayed whole (%d of %d bytes given)",  # 13
    # handshake.parse_request and connection.py: requests refused as malformed
    "malformed request line",  # 14
    "request line is not valid text",  # 15
    "unsupported HTTP version: %s",  # 16
    "request target must be a path",  # 17
    "more than %d header fields",  # 18
    "malformed header line",  # 19
    "malformed header name",  # 20
    "header value is not valid text",  # 21
    "request head larger than %d bytes",  # 22
    "too much data sent before the handshake completed",  # 23
    "no WebSocket endpoint at %s",  # 24
    "only GET and HEAD are served",  # 25
    # frames.fits_or_raise: a send that never fits the ring
    "%d bytes: a %d-byte send ring takes frames of up to %d bytes (send_fragment)",  # 26
    # pmd.py: a compressed message (permessage-deflate) that cannot be inflated
    "invalid compressed data",  # 27
    "compressed message ends inside a block",  # 28
    "compressed data needs more than %d bytes of lookahead",  # 29
)

