# Run by test_tls_ring.py under the MicroPython unix port (MICROPYPATH: a firmware build):
# an SSL server that writes a known byte pattern from a send ring, filling the ring more
# whenever the socket pushes back, as the runtime's write_out does. argv: port, cert.der,
# key.der, ring class ("tls": ringws.tls.TlsRing, "plain": RingBuffer), bytes to send.
import select
import socket
import ssl
import sys

from ringws.compat import recv_into, send_from
from ringws.ring import RingBuffer
from ringws.tls import TlsRing

port, cert, key, kind, total = sys.argv[1:6]
total = int(total)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(open(cert, "rb").read(), open(key, "rb").read())
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(socket.getaddrinfo("127.0.0.1", int(port))[0][-1])
ls.listen(1)

raw, _ = ls.accept()
raw.setblocking(False)
raw.setsockopt(socket.SOL_SOCKET, 7, 4096)  # SO_SNDBUF (Linux): push back early
ss = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
poll = select.poll()
poll.register(raw, select.POLLIN)
one = bytearray(1)
while recv_into(ss, one, 1) is None:
    poll.poll(5000)
poll.modify(raw, select.POLLOUT)
ring = (TlsRing if kind == "tls" else RingBuffer)(bytearray(4096))
pat = bytes(range(251)) * 8
made = pushbacks = 0
while made < total or ring.used:
    k = min(ring.free(), 700, total - made)
    if k > 0:
        ring.write(pat, made % 251, k)
        made += k
    if ring.used:
        n = send_from(ss, ring.buf, ring.head, ring.readable())
        if n is None:
            pushbacks += 1
            k = min(ring.free(), 700, total - made)  # more queued before the retry
            if k > 0:
                ring.write(pat, made % 251, k)
                made += k
            poll.poll(5000)
        else:
            ring.consume(n)
print("sent", made, "pushbacks", pushbacks)
ss.close()
