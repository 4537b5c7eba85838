#!/usr/bin/env python3
"""Fuzz the handshake parser, the frame decoder and permessage-deflate (`make fuzz`).

    tools/fuzz.py [--examples N] [--seconds S] [--target handshake|frames|deflate|all]

Hypothesis drives both targets with random bytes, mutations of valid input and random
chunking, on the host board's slot (boards/host.json: the receive buffer, send ring and
message buffer of the ESP32 sizing; a request head may fill all three). The property: no
exception escapes; every refusal is an HTTP status the server documents (handshake) or a
close code with a close frame queued (frames); after a failure nothing more is delivered. The same targets run with a small budget in `make test`
(host_tests/test_hostile_fuzz.py). Prints executions, events seen and findings; exits 1 on
a finding, with the smallest failing input Hypothesis found.

The deflate target: messages compressed by zlib (windows 9..15, a sync flush or a final
block), cut into frames anywhere, maybe mutated, fed to a Protocol that negotiated
permessage-deflate (one inflater, window 9). Beside the properties above, an intact
stream whose window fits must come out exactly as it went in.
"""
import argparse
import base64
import os
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "firmware"))

from ringws import handshake  # noqa: E402
from ringws.handshake import HttpError  # noqa: E402
from ringws.protocol import (  # noqa: E402  (the core's names are private const()s)
    _CLOSED as CLOSED,
    _EV_BLOCKED as EV_BLOCKED,
    _EV_CLOSE as EV_CLOSE,
    _EV_ERROR as EV_ERROR,
    _EV_FRAGMENT as EV_FRAGMENT,
    _EV_MESSAGE as EV_MESSAGE,
    _EV_NONE as EV_NONE,
    Protocol,
)

try:  # where the core keeps it has moved once already
    from ringws.http import error_response as _error_response  # noqa: E402
except ImportError:
    from ringws.handshake import error_response as _error_response  # noqa: E402

HTTP_STATUSES = (400, 401, 403, 404, 405, 408, 426, 431, 503)
ERROR_CODES = (1002, 1007, 1009)

def _host_slot():
    """The host board's slot (boards/host.json, the ESP32's sizing): receive buffer, send
    ring, message buffer. A request head may fill the whole slot (the runtime reads it into
    all three), so the handshake target reads into their sum."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import boards

    srv = boards.load("host")["server"]
    return srv["recv_buf"], srv["send_ring"], srv["max_message"]


RECV, RING, MBUF = _host_slot()  # small: the limits are hit often
HEAD = RECV + RING + MBUF

VALID_HEAD = (b"GET /echo?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
              b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: "
              + base64.b64encode(b"0123456789abcdef") + b"\r\nSec-WebSocket-Version: 13\r\n"
              b"Origin: http://x\r\nSec-WebSocket-Protocol: a, b\r\n\r\n")


class Finding(AssertionError):
    pass


stats = {"handshake": 0, "frames": 0, "deflate": 0, "events": {}, "statuses": {}, "close_codes": {}}


def _count(table, key):
    stats[table][key] = stats[table].get(key, 0) + 1


def run_handshake(data, chunks=()):
    """Feed a request head the way the server does (find_end over growing reads, then
    parse and validate). Returns the status: 101 or an HttpError's."""
    stats["handshake"] += 1
    buf = bytearray(HEAD)
    got = 0
    end = -1
    pieces = _split(data, chunks)
    for piece in pieces:
        n = min(len(piece), HEAD - got)
        buf[got:got + n] = piece[:n]
        end = handshake.find_end(buf, got, got + n)
        got += n
        if end >= 0 or got == HEAD:
            break
    if end < 0:
        status = 431 if got == HEAD else None
        _count("statuses", status)
        return status
    try:
        req = handshake.parse_request(buf, end)
        assert req.path.startswith("/"), req.path
        handshake.validate_upgrade(req)
        handshake.select_subprotocol(req, ("b", "a"))
        status = 101
    except HttpError as e:
        if e.status not in HTTP_STATUSES:
            raise Finding("undocumented status %r for %r" % (e.status, bytes(data[:200])))
        _error_response(e)  # the answer itself must be buildable
        status = e.status
    _count("statuses", status)
    return status


def _split(data, chunks):
    out = []
    pos = 0
    for c in chunks:
        if pos >= len(data):
            break
        out.append(data[pos:pos + max(1, c)])
        pos += max(1, c)
    if pos < len(data) or not out:
        out.append(data[pos:])
    return out


def _pmd():
    # permessage-deflate as the server sets it up: a pool of one inflater, window 9.
    from ringws import pmd, pmdoffer

    cfg = {"inflaters": 1, "inflate_bits": 9, "max_message": MBUF, "send_ring": RING}
    assert pmdoffer.negotiate("permessage-deflate; client_max_window_bits", 9)
    pmd.ready(cfg)
    return pmd


def run_frames(data, chunks=(), stream=False, refuse_every=0, zin=None):
    """Feed client bytes to a Protocol in chunks, handling events like the runtime does
    (optionally refusing every n-th event to exercise backpressure). Returns the events.
    zin: the pmd module, as if permessage-deflate was negotiated."""
    stats["frames"] += 1
    p = Protocol(bytearray(RECV), bytearray(RING), bytearray(MBUF))
    p.upgrade(stream, zin=zin)
    try:
        return _feed_frames(p, data, chunks, refuse_every)
    finally:
        p.reset()  # (the inflater goes back to the pool)


def run_deflate(msgs, chunks=(), stream=False, refuse_every=0, garble=()):
    """Compressed messages ((text, payload, wbits, final, cuts), ...) as frames, maybe
    garbled at (offset, byte) pairs; an intact stream must come out as it went in."""
    import zlib

    stats["deflate"] += 1
    data = b""
    for text, payload, wbits, final, cuts in msgs:
        c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
        z = c.compress(payload) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
        if not final:
            z = z[:-4]
        edges = [0] + sorted(set(k % (len(z) + 1) for k in cuts)) + [len(z)]
        for i in range(len(edges) - 1):
            op = (1 if text else 2) if i == 0 else 0
            b0 = (0x80 if i == len(edges) - 2 else 0) | (0x40 if i == 0 else 0) | op
            part = z[edges[i]:edges[i + 1]]
            n = len(part)
            head = bytes((b0, 0x80 | n)) if n < 126 else bytes((b0, 0xFE)) + struct.pack(">H", n)
            data += head + b"\0\0\0\0" + part  # (a zero mask)
    clean = bytearray(data)
    for pos, val in garble:
        if data:
            clean[pos % len(clean)] = val
    garbled = bytes(clean) != data
    events = run_frames(bytes(clean), chunks, stream, refuse_every, _pmd())
    if garbled or any(m[2] > 9 for m in msgs):
        return events
    got = []
    part = b""
    for e in events:
        if e[0] == EV_ERROR:
            if e[1] != 1009 or stream:
                raise Finding("intact compressed stream failed with %r" % (e,))
            return events
        part += e[1]
        if e[0] == EV_MESSAGE or e[3]:
            got.append((e[2], part))
            part = b""
    want = [(m[0], m[1]) for m in msgs]
    if got != want:
        raise Finding("inflated %r, sent %r" % ([(t, len(x)) for t, x in got],
                                               [(t, len(x)) for t, x in want]))
    return events


def _feed_frames(p, data, chunks, refuse_every):
    events = []
    failed = False
    pieces = _split(data, chunks)
    tries = 0
    for piece in pieces:
        off = 0
        while off < len(piece) or p.pending:
            if off < len(piece):
                off += p.feed(piece[off:])
            progressed = False
            while True:
                ev = p.next_event()
                if ev == EV_NONE:
                    break
                if ev not in (EV_MESSAGE, EV_FRAGMENT, EV_CLOSE, EV_ERROR, EV_BLOCKED):
                    raise Finding("undocumented event %r" % ev)
                if failed and (ev != EV_CLOSE or p.close_code != failed):
                    # (only the peer's close may end a failed connection; our code stays)
                    raise Finding("event %r after the connection failed" % ev)
                _count("events", ev)
                if ev == EV_BLOCKED:
                    _drain(p)  # the writer sends the ring out; the reply then fits
                    progressed = True
                    continue
                if ev in (EV_MESSAGE, EV_FRAGMENT):
                    tries += 1
                    if refuse_every and tries % refuse_every == 0:
                        break  # the handler said "not now": offered again next round
                    data_len = len(p.ev_data)
                    if ev == EV_MESSAGE and data_len > max(RECV, MBUF):
                        raise Finding("message of %d bytes beyond the limits" % data_len)
                    events.append((ev, bytes(p.ev_data), p.ev_text, p.ev_last))
                    p.consume()
                    progressed = True
                    continue
                events.append((ev, p.close_code))
                if ev == EV_ERROR:
                    failed = p.close_code
                    _check_error(p)
                if ev == EV_CLOSE:
                    break
                progressed = True
            if p.ring.used > p.ring.size:
                raise Finding("ring overflow")
            _drain(p)
            if p.state == CLOSED:
                return events
            if off >= len(piece) and p.pending:
                continue  # refused event: offer it again (every refuse_every-th is refused)
            if off >= len(piece):
                break
    return events


def _drain(p):
    ring = p.ring
    while ring.used:
        ring.consume(ring.readable())


def _check_error(p):
    code = p.close_code
    _count("close_codes", code)
    if code not in ERROR_CODES:
        raise Finding("failure with close code %r" % code)
    ring = p.ring
    out = bytearray()
    while ring.used:
        n = ring.readable()
        out += bytes(ring.buf[ring.head:ring.head + n])
        ring.consume(n)
    tail = _last_frame(out)  # the close frame is the last thing queued
    if tail is None or tail[0] != 0x88 or struct.unpack(">H", tail[2:4])[0] != code:
        raise Finding("no close frame with code %d queued: %r" % (code, bytes(out[-40:])))


def _last_frame(out):
    pos = 0
    last = None
    while pos + 2 <= len(out):
        n = out[pos + 1] & 0x7F
        size = 2
        if n == 126:
            n = struct.unpack(">H", out[pos + 2:pos + 4])[0]
            size = 4
        last = out[pos:pos + size + n]
        pos += size + n
    return last


# -- strategies ---------------------------------------------------------------------------

def strategies():
    from hypothesis import strategies as st

    def masked(op, payload, fin=True, rsv=0, mask=b"\x37\xfa\x21\x3d", masked=True, lie=None):
        n = len(payload) if lie is None else lie
        b0 = (0x80 if fin else 0) | (rsv << 4) | op
        mbit = 0x80 if masked else 0
        if n < 126:
            head = bytes((b0, mbit | n))
        elif n < 65536:
            head = bytes((b0, mbit | 126)) + struct.pack(">H", n)
        else:
            head = bytes((b0, mbit | 127)) + struct.pack(">Q", n)
        if not masked:
            return head + payload
        return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))

    utf8ish = st.one_of(st.text(max_size=40).map(lambda s: s.encode()),
                        st.binary(max_size=40),
                        st.sampled_from([b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                                         b"\xe2\x82", "é".encode() * 3]))
    frame = st.builds(
        masked,
        st.sampled_from([1, 1, 1, 2, 2, 2, 0, 0, 0, 9, 10, 8, 3, 11, 15]),
        st.one_of(utf8ish, st.binary(min_size=100, max_size=1500)),
        st.booleans(),
        st.sampled_from([0] * 12 + [1, 4]),
        st.binary(min_size=4, max_size=4),
        st.sampled_from([True] * 12 + [False]),
        st.one_of(st.none(), st.none(), st.none(), st.none(), st.none(), st.none(),
                  st.none(), st.none(), st.integers(0, 1 << 20),
                  st.sampled_from([126, 65535, 65536, 1 << 63, (1 << 64) - 1])),
    )
    close = st.builds(lambda code, reason: masked(8, struct.pack(">H", code) + reason),
                      st.integers(0, 65535), utf8ish)
    stream = st.lists(st.one_of(frame, close, st.binary(max_size=20)), max_size=8).map(b"".join)

    def mutate(data, flips):
        b = bytearray(data)
        for pos, val in flips:
            if b:
                b[pos % len(b)] = val
        return bytes(b)

    mutated = st.builds(mutate, stream, st.lists(st.tuples(st.integers(0, 4000),
                                                           st.integers(0, 255)), max_size=4))
    def message(op, payload, cuts, ping):
        # One valid message, fragmented at cuts, maybe with a ping between fragments.
        parts = []
        pos = 0
        for c in sorted(set(c % (len(payload) + 1) for c in cuts)):
            parts.append(payload[pos:c])
            pos = c
        parts.append(payload[pos:])
        out = b""
        for i, part in enumerate(parts):
            out += masked(op if i == 0 else 0, part, fin=i == len(parts) - 1)
            if ping and i == 0:
                out += masked(9, b"p")
        return out

    valid_msg = st.builds(message, st.sampled_from([1, 2]),
                          st.one_of(st.text(max_size=300).map(lambda s: s.encode()),
                                    st.binary(max_size=1200)),
                          st.lists(st.integers(0, 1200), max_size=3), st.booleans())
    valid = st.lists(valid_msg, min_size=1, max_size=5).map(b"".join)
    frames_input = st.one_of(valid, st.builds(mutate, valid, st.lists(
        st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=2)),
        stream, mutated, st.binary(max_size=2000))

    head_lines = st.lists(st.one_of(
        st.sampled_from(VALID_HEAD.split(b"\r\n")[1:-2]),
        st.binary(max_size=60),
        st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.builds(lambda n, v: n + b": " + v, st.sampled_from(
            [b"Upgrade", b"Connection", b"Sec-WebSocket-Key", b"Sec-WebSocket-Version",
             b"Host", b"Sec-WebSocket-Protocol", b"upgrade"]), st.binary(max_size=30)),
    ), max_size=45)
    request_line = st.one_of(st.sampled_from([b"GET /echo HTTP/1.1", b"GET / HTTP/1.0",
                                              b"POST /echo HTTP/1.1", b"GET /echo HTTP/2"]),
                             st.binary(max_size=40))
    heads = st.one_of(
        st.builds(lambda r, ls: b"\r\n".join([r] + ls) + b"\r\n\r\n", request_line, head_lines),
        st.builds(mutate, st.just(VALID_HEAD), st.lists(
            st.tuples(st.integers(0, len(VALID_HEAD)), st.integers(0, 255)), max_size=6)),
        st.binary(max_size=1000),
    )
    chunks = st.lists(st.integers(1, 300), max_size=12)
    payload = st.one_of(st.text(max_size=400).map(lambda s: s.encode()), st.binary(max_size=3000),
                        st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=3),
                                  st.integers(0, 20000)))
    zmsg = st.builds(lambda t, p, w, f, c: (t and _utf8(p), p, w, f, c), st.booleans(), payload,
                     st.sampled_from([9] * 6 + list(range(10, 16))), st.booleans(),
                     st.lists(st.integers(0, 5000), max_size=6))
    zmsgs = st.lists(zmsg, min_size=1, max_size=4)
    garble = st.one_of(st.just(()), st.just(()), st.lists(
        st.tuples(st.integers(0, 8000), st.integers(0, 255)), min_size=1, max_size=3))
    return {"frames": frames_input, "heads": heads, "chunks": chunks, "zmsgs": zmsgs,
            "garble": garble}


def _utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def make_tests(examples, deadline=None):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    s = strategies()
    cfg = settings(max_examples=examples, deadline=deadline, database=None,
                   suppress_health_check=list(HealthCheck))

    @cfg
    @given(s["heads"], s["chunks"])
    def fuzz_handshake(data, chunks):
        run_handshake(data, chunks)

    @cfg
    @given(s["frames"], s["chunks"], st.booleans(), st.sampled_from([0, 0, 2, 3]))
    def fuzz_frames(data, chunks, stream, refuse):
        run_frames(data, chunks, stream, refuse)

    @cfg
    @given(s["zmsgs"], s["chunks"], st.booleans(), st.sampled_from([0, 0, 2, 3]), s["garble"])
    def fuzz_deflate(msgs, chunks, stream, refuse, garble):
        run_deflate(msgs, chunks, stream, refuse, garble)

    return {"handshake": fuzz_handshake, "frames": fuzz_frames, "deflate": fuzz_deflate}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=200000, help="per target and round")
    ap.add_argument("--seconds", type=float, default=600, help="stop starting rounds after")
    ap.add_argument("--target", default="all", choices=("all", "handshake", "frames", "deflate"))
    args = ap.parse_args(argv)
    targets = ["handshake", "frames", "deflate"] if args.target == "all" else [args.target]
    per_round = max(1, min(args.examples, 20000))
    findings = []
    t0 = time.monotonic()
    rounds = 0
    while time.monotonic() - t0 < args.seconds and rounds * per_round < args.examples:
        tests = make_tests(per_round)
        for name in targets:
            try:
                tests[name]()
            except Exception as e:  # a finding, minimised by Hypothesis
                findings.append("%s: %r" % (name, e))
                print("FINDING", name, repr(e)[:2000], flush=True)
        rounds += 1
        print("round %d: %d handshake and %d frame-stream executions, %.0f s"
              % (rounds, stats["handshake"], stats["frames"], time.monotonic() - t0), flush=True)
        if findings:
            break
    names = {EV_MESSAGE: "message", EV_FRAGMENT: "fragment", EV_CLOSE: "close",
             EV_ERROR: "error", EV_BLOCKED: "blocked"}
    print("executions: handshake %d, frames %d in %.0f s"
          % (stats["handshake"], stats["frames"], time.monotonic() - t0))
    print("handshake outcomes:", dict(sorted(stats["statuses"].items(), key=str)))
    print("frame events:", {names.get(k, k): v for k, v in stats["events"].items()})
    print("failure close codes:", stats["close_codes"])
    print("findings: %d" % len(findings))
    for f in findings:
        print("  " + f[:500])
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
