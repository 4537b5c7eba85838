"""CPython: ringws's sans-I/O frame parsing + unmasking against wsproto, on the same bytes.

Both parse a buffer of N masked client frames and produce every unmasked payload.
ringws: FrameHeader.parse + kernels.unmask in place on a bytearray (the server's way).
wsproto: FrameProtocol.receive_bytes + received_frames (its server side, no extensions).
"""
import os
import sys
import time

import client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ringws():
    fw = os.path.join(ROOT, "firmware")
    if fw not in sys.path:
        sys.path.insert(0, fw)
    try:
        from ringws import frames
    except ImportError as e:
        return None, str(e)
    return frames, None


def ringws_parse(frames, data, payload_len):
    buf = bytearray(data)
    h = frames.FrameHeader()
    pos, end, count, got = 0, len(buf), 0, 0
    while pos < end:
        size = h.parse(buf, pos, end)
        if not size:
            break
        start = pos + size
        stop = start + h.length
        frames.unmask(buf, start, stop, h.mask, 0)
        count += 1
        got += h.length
        pos = stop
    return count, got, buf


def wsproto_parse(data):
    from wsproto.frame_protocol import FrameProtocol

    fp = FrameProtocol(client=False, extensions=[])
    fp.receive_bytes(data)
    count = got = 0
    last = None
    for f in fp.received_frames():
        count += 1
        got += len(f.payload)
        last = f.payload
    return count, got, last


def bench(sizes=(16, 1024, 65536), total_bytes=4 << 20, rounds=3):
    frames, err = _ringws()
    rows = []
    for size in sizes:
        frame, payload = client.masked_frame(size)
        n = max(1, total_bytes // len(frame))
        data = frame * n
        row = {"size": size, "frames": n}
        for name in ("ringws", "wsproto"):
            if name == "ringws" and frames is None:
                row[name] = None
                continue
            best = None
            for _ in range(rounds):
                t0 = time.perf_counter()
                if name == "ringws":
                    count, got, buf = ringws_parse(frames, data, size)
                    ok = count == n and bytes(buf[-size:]) == payload
                else:
                    count, got, last = wsproto_parse(data)
                    ok = count == n and bytes(last) == payload
                dt = time.perf_counter() - t0
                if not ok:
                    raise AssertionError("%s parsed %d of %d frames of %d B wrongly"
                                         % (name, count, n, size))
                best = dt if best is None else min(best, dt)
            row[name] = {"frames_s": n / best, "mb_s": n * size / best / 1e6}
        rows.append(row)
    return {"rows": rows, "ringws_error": err}
