"""Markdown for the bench results (run.py's dict); returns (report, headline table)."""
import platform
import sys

ORDER = ["ringws", "ringws-shared", "ringws-async", "ringws-deflate", "microdot", "chumicro", "raw-tcp"]
OURS = ("ringws", "ringws-shared", "ringws-async")


def _names(res):
    seen = set(res.get("throughput", {}).get(next(iter(res.get("throughput", {})), ""), {}))
    seen |= set(res["targets"])
    return [n for n in ORDER if n in seen]


def _f(x, nd=0, unit=""):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and nd == 0:
        return "{:,.0f}{}".format(x, unit)
    return "{:,.{}f}{}".format(x, nd, unit)


def _ratio(a, b):
    if not a or not b:
        return "-"
    return "%.2fx" % (a / b)


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _cell(res, key, name):
    return res.get("throughput", {}).get(key, {}).get(name)


def _rate(res, key, name):
    c = _cell(res, key, name)
    return c["msg_s"] if c and not c["errors"] else (c["msg_s"] if c else None)


def headline(res):
    names = _names(res)
    key = "1024 B, 1 conn x 16 in flight"
    raw = _rate(res, key, "raw-tcp")
    rows = []
    for n in names:
        t = res["targets"].get(n, {})
        c = _cell(res, key, n)
        lat = _cell(res, "16 B, 1 conn x 1 in flight", n)
        per = (t.get("idle_heap") or {}).get("per_conn", {})
        alloc = (t.get("alloc") or {}).get(16, {})
        nr = t.get("never_reader") or {}
        cap = t.get("capacity") or {}
        rows.append([
            "**%s**" % n if n in OURS else n,
            _f(c["msg_s"]) + (" (errors)" if c and c["errors"] else "") if c else "-",
            _ratio(c and c["msg_s"], raw),
            "%s / %s" % (_f(lat and lat["p50_ms"], 2), _f(lat and lat["p99_ms"], 2)),
            _f(per.get(8) if per.get(8) is not None else per.get(1)),
            _f(alloc.get("bytes_per_msg")) if "bytes_per_msg" in alloc else "fails",
            _f(nr.get("growth")) if nr else "-",
            " / ".join(_f((cap.get(h) or {}).get("clients"))
                       for h in (res["config"]["heap"], res["config"]["big_heap"])),
        ])
    hdr = ["target", "1 KiB x16 msg/s", "vs raw", "16 B p50/p99 ms", "heap B/idle conn",
           "B alloc/echo 16 B", "heap growth, never-reading client B",
           "echoing clients %s / %s" % (res["config"]["heap"], res["config"]["big_heap"])]
    return _table(hdr, rows)


def render(res):
    names = _names(res)
    L = []
    cfg = res["config"]
    L.append("# ringws bench (%s run, %s)\n" % (res["mode"], res["started"]))
    L.append("All targets: the same `.venv/bin/micropython` (MicroPython %s, unix port) with "
             "`-X heapsize=%s` unless a row says otherwise; client: CPython %s on %s, "
             "raw sockets, pre-built masked frames. Each cell: %d repeats of %.2f s after "
             "%.2f s warm-up, interleaved across targets (idle targets frozen with SIGSTOP); "
             "median shown, spread = (max-min)/median. Total %.0f s.\n"
             % (_mpver(res), cfg["heap"], platform.python_version(), platform.machine(),
                cfg["repeats"], cfg["duration"], cfg["warmup"], res.get("seconds", 0)))
    L.append(_table(["target", "how it runs"],
                    [[n, res["targets"].get(n, {}).get("note", "")] for n in names]))
    for n, why in res.get("skipped", {}).items():
        L.append("- **%s skipped**: %s\n" % (n, why))
    for n, (ok, detail) in (res.get("source_import") or {}).items():
        L.append("- %s from source at %s: %s%s\n" % (
            n, cfg["heap"], "ok, " if ok else "fails (", detail + ("" if ok else ");"
                                                                   " so its files run as "
                                                                   "mpy-cross .mpy, like "
                                                                   "ringws's")))
    L.append("\n## Headline\n\n" + headline(res))
    L.append(_targets_check(res))

    if res.get("tls"):
        import tls_cell

        L.append(tls_cell.render(res["tls"]))
    L.append("\n## Echo throughput (messages/s, median, spread)\n\n")
    L.append("Servers without the bench's control port: the heap is the target's alone.\n\n")
    rows = []
    errs = []
    for key, per in res.get("throughput", {}).items():
        row = [key]
        for n in names:
            c = per.get(n)
            if not c:
                row.append("-")
                continue
            s = "%s (±%s%%)" % (_f(c["msg_s"]), _f((c["spread"] or 0) * 50))
            if c["errors"]:
                errs.append("%s, %s: %s" % (n, key, "; ".join(c["errors"][:3])))
                s += " [%d]" % len(errs)
            row.append(s)
        rows.append(row)
    L.append(_table(["cell"] + names, rows))
    for i, e in enumerate(errs, 1):
        L.append("[%d] %s  \n" % (i, e))

    crash_rows = []
    for n in names:
        cr = res["targets"].get(n, {}).get("crashes") or []
        if cr:
            crash_rows.append([n, len(cr), "; ".join(sorted({c["before"] for c in cr}))[:120],
                               cr[0]["exit"][:120]])
    if crash_rows:
        L.append("\nServer processes that died during these cells and were restarted before "
                 "the next measurement:\n\n")
        L.append(_table(["target", "restarts", "found dead before", "first exit"],
                        crash_rows))

    L.append("\n## MB/s (payload, one way) and client CPU (share of one core, worst repeat)\n\n")
    rows = []
    for key, per in res.get("throughput", {}).items():
        rows.append([key] + ["%s MB/s, cpu %s" % (_f(per[n]["mb_s"], 2),
                                                  _f(per[n]["client_cpu"] * 100, 0, "%"))
                             if n in per else "-" for n in names])
    L.append(_table(["cell"] + names, rows))

    L.append("\n## Ratios (messages/s)\n\n")
    rows = []
    ours = [n for n in names if n in OURS]
    peers = [n for n in names if n not in OURS and n != "raw-tcp"]
    for key, per in res.get("throughput", {}).items():
        row = [key]
        raw = per.get("raw-tcp", {}).get("msg_s")
        for n in names:
            if n != "raw-tcp":
                row.append(_ratio(per.get(n, {}).get("msg_s"), raw))
        for o in ours:
            r = per.get(o, {}).get("msg_s")
            for n in peers:
                row.append(_ratio(r, per.get(n, {}).get("msg_s")))
        rows.append(row)
    L.append(_table(["cell"] + ["%s/raw" % n for n in names if n != "raw-tcp"]
                    + ["%s/%s" % (o, n) for o in ours for n in peers], rows))

    L.append("\n## Latency, 16 B messages (ms, p50 / p99 over all repeats)\n\n")
    rows = []
    for key, per in res.get("throughput", {}).items():
        if key.startswith("16 B"):
            rows.append([key] + ["%s / %s" % (_f(per[n]["p50_ms"], 3), _f(per[n]["p99_ms"], 3))
                                 if n in per else "-" for n in names])
    L.append(_table(["cell"] + names, rows))

    L.append("\n## Memory (bytes, measured inside the server with gc.mem_alloc())\n\n")
    rows = []
    for n in names:
        t = res["targets"].get(n, {})
        ih = t.get("idle_heap") or {}
        per = ih.get("per_conn", {})
        if "error" in ih:
            per = {1: _fails(ih)}
        al = t.get("alloc") or {}
        fs = al.get("frame_sent")
        rows.append([n, _f(ih.get("base")), _f(per.get(1)), _f(per.get(4)), _f(per.get(8)),
                     _alloc(al.get(16)), _alloc(al.get(1024)),
                     (_fails(fs) if "error" in fs else _f(fs["bytes_per_frame"], 1))
                     if fs else "n/a", _f(t.get("idle_alloc_per_s"))])
    L.append(_table(["target", "live heap, server idle", "per idle conn (1)", "(4)", "(8)",
                     "alloc per echoed 16 B msg", "per 1 KiB msg", "per 16 B frame sent",
                     "alloc/s while idle (2M)"], rows))
    L.append("\nPer-message allocation: bytes allocated between two `gc.mem_alloc()` reads "
             "with the collector disabled, on a %s heap, slope between %d and %d echoed "
             "messages (%d and %d of 16 B for a server under 1 KiB a message; one receive "
             "and one send each) on one connection, so the cost of the control port "
             "itself cancels out. It includes "
             "anything the server's loop allocates while it waits: with one message in "
             "flight every message costs a wake-up, and MicroPython's asyncio registers a "
             "socket again for every wait (select.poll makes a 32 B record each time, and "
             "the I/O queue a new list; ringws keeps both for the connection's life). "
             "Per frame sent: "
             "`conn.send()` of 16 B frames called from inside the server (a ringws-only "
             "control command), 10 and 40 frames, slope; the peers' "
             "send paths cannot be driven that way without changing them (n/a).\n"
             % ((cfg["big_heap"],) + tuple(cfg["alloc_n"]) + tuple(cfg["alloc_n_lean"])))

    L.append("\n### One client that sends 1 KiB messages and never reads (%.1f s)\n\n"
             % cfg["never_read_s"])
    rows = []
    for n in names:
        nr = res["targets"].get(n, {}).get("never_reader")
        if not nr or "client_sent_bytes" not in nr:
            rows.append([n, "-", "-", "-", "-", "-", _fails(nr)])
            continue
        rows.append([n, _f(nr.get("first")), _f(nr.get("max")), _f(nr.get("last")),
                     _f(nr.get("growth")), _f(nr["client_sent_bytes"] / 1024.0, 0, " KiB"),
                     ("alive" if nr["alive"] else "DIED") + (", " + nr["error"]
                                                            if nr.get("error") else "")])
    L.append(_table(["target", "heap at start", "max", "end", "growth",
                     "client got rid of", "server"], rows))

    st = (res["targets"].get("ringws", {}).get("never_reader") or {}).get("stats")
    if st:
        keep = ("messages_in", "messages_out", "bytes_in", "bytes_out", "dropped", "closed",
                "mem_alloc", "mem_free")
        L.append("\nringws /stats at the end of that run: `%s`\n"
                 % ", ".join("%s=%s" % (k, st[k]) for k in keep if k in st))

    L.append("\n### Most concurrent echoing clients\n\n")
    rows = []
    for n in names:
        cap = res["targets"].get(n, {}).get("capacity") or {}
        for h in (cfg["heap"], cfg["big_heap"]):
            if h in cap:
                c = cap[h]
                rows.append([n, h, _f(c.get("clients")), c.get("limit", ""), c.get("note", "")])
    L.append(_table(["target", "heap", "clients", "stopped because", "note"], rows))
    L.append("\nClients are added 1 at a time to 16, then 4, then 16 at a time, up to the "
             "bench's cap (%d at %s, %d at %s); after each step every client echoes one "
             "16 B message. These servers run without the bench's control port, whose "
             "code and buffers would take heap from the clients.\n" % (cfg["cap_small"], cfg["heap"], cfg["cap_big"],
                                  cfg["big_heap"]))

    L.append("\n### Churn: connect/upgrade then close, half clean, half TCP reset\n\n")
    rows = []
    for n in names:
        c = res["targets"].get(n, {}).get("churn")
        if not c or "cycles" not in c:
            rows.append([n, "-", "-", "-", "-", _fails(c)])
            continue
        rows.append([n, c["cycles"], c["failed"], _f(c["cycles"] / c["seconds"]),
                     _f(c.get("leaked_heap")), _f(c.get("leaked_fds"))
                     + ("" if c["alive"] else " (server died)")])
    L.append(_table(["target", "cycles", "failed", "cycles/s", "leaked heap B",
                     "leaked fds"], rows))

    L.append("\n## CPython: frame parsing + unmasking, ringws core vs wsproto (same bytes)\n\n")
    cf = res.get("cpython_frames") or {}
    rows = []
    for r in cf.get("rows", []):
        rw, wp = r.get("ringws"), r.get("wsproto")
        rows.append([r["size"], r["frames"],
                     "%s frames/s, %s MB/s" % (_f(rw["frames_s"]), _f(rw["mb_s"], 1)) if rw else "-",
                     "%s frames/s, %s MB/s" % (_f(wp["frames_s"]), _f(wp["mb_s"], 1)),
                     _ratio(rw and rw["frames_s"], wp["frames_s"])])
    L.append(_table(["payload B", "frames", "ringws (FrameHeader.parse + unmask)",
                     "wsproto FrameProtocol", "ringws/wsproto"], rows))
    if cf.get("ringws_error"):
        L.append("ringws frames not importable: %s\n" % cf["ringws_error"])
    md = "".join(x if x.endswith("\n") else x + "\n" for x in L)
    head = ("Bench (%s run, %s; MicroPython unix port, -X heapsize=%s; "
            "`make bench` for the full report)\n\n" % (res["mode"], res["started"],
                                                        cfg["heap"])) + headline(res)
    return md, head


def _fails(d):
    """A measurement that failed (run.guarded): its reason, shortened."""
    return "fails: " + d["error"][:60] if d and d.get("error") else "-"


def _alloc(a):
    if not a:
        return "-"
    if "error" in a:
        return "fails: " + a["error"][:60]
    return _f(a["bytes_per_msg"], 1)


def _mpver(res):
    return res.get("micropython", "?")


def _targets_check(res):
    """ringws's targets from the issue, as figures (not tests)."""
    if "ringws" not in res["targets"] or "throughput" not in res:
        return ""
    key = "1024 B, 1 conn x 16 in flight"
    r = _rate(res, key, "ringws")
    raw = _rate(res, key, "raw-tcp")
    md = _rate(res, key, "microdot")
    t = res["targets"]["ringws"]
    a16 = (t.get("alloc") or {}).get(16, {}).get("bytes_per_msg")
    fs = ((t.get("alloc") or {}).get("frame_sent") or {}).get("bytes_per_frame")
    nr = (t.get("never_reader") or {}).get("growth")
    cap = ((t.get("capacity") or {}).get(res["config"]["heap"]) or {}).get("clients")
    rows = [
        ["1 KiB x16: >= 0.5x raw echo", _ratio(r, raw), _ok(r and raw and r >= raw / 2)],
        ["1 KiB x16: >= 10x microdot", _ratio(r, md), _ok(r and md and r >= 10 * md)],
    ]
    if "ringws-shared" in res["targets"]:
        s = _rate(res, key, "ringws-shared")
        scap = ((res["targets"]["ringws-shared"].get("capacity") or {})
                .get(res["config"]["heap"]) or {}).get("clients")
        rows += [
            ["1 KiB x16 with a 4 KiB shared receive buffer (ringws-shared): >= 0.5x raw echo",
             _ratio(s, raw), _ok(s and raw and s >= raw / 2)],
            ["1 KiB x16 with a 4 KiB shared receive buffer: >= 10x microdot", _ratio(s, md),
             _ok(s and md and s >= 10 * md)],
            ["8 echoing clients in a 110 KiB heap with that buffer", _f(scap),
             _ok(scap is not None and scap >= 8)],
        ]
    rows += [
        ["0 bytes allocated per frame sent", _f(fs, 1) + " B", _ok(fs is not None and fs <= 0)],
        ["<= 1 small object (32 B on x64) per message received, measured per echoed 16 B "
         "message with 1 in flight (wake-up included)", _f(a16, 1) + " B",
         _ok(a16 is not None and a16 <= 32)],
        ["heap flat under a never-reading client", _f(nr) + " B growth",
         _ok(nr is not None and nr <= 512)],
        ["8 echoing clients in a 110 KiB heap", _f(cap), _ok(cap is not None and cap >= 8)],
    ]
    return "\n### ringws against the issue's targets\n\n" + _table(
        ["target", "measured", "met"], rows)


def _ok(x):
    return "yes" if x else "no"
