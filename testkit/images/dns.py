#!/usr/bin/env python3
"""The test cluster's DNS (the pod runner's stand-in for CoreDNS): answers A queries over UDP from a records file
the kubelet keeps current ("<name> <IPv4>" per line), as CoreDNS's kubernetes plugin answers them:
<service>.<namespace>.svc.<domain> (the ClusterIP, or a headless Service's ready pods) and
<hostname>.<subdomain>.<namespace>.svc.<domain>. A known name asked for another type gets an empty answer; any
other name NXDOMAIN (no upstream: pods reach nothing outside the test). Usage: dns.py RECORDS [PORT]"""
import os
import socket
import struct
import sys

records_path = sys.argv[1]
port = int(sys.argv[2]) if len(sys.argv) > 2 else 53
records, stamp = {}, None


def load():
    global records, stamp
    try:
        mtime = os.stat(records_path).st_mtime_ns
    except FileNotFoundError:
        return
    if mtime == stamp:
        return
    fresh = {}
    with open(records_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                fresh.setdefault(parts[0].lower().rstrip("."), []).append(parts[1])
    records, stamp = fresh, mtime


def answer(query):
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return None
    labels, i = [], 12
    while query[i] != 0:
        n = query[i]
        labels.append(query[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, qclass = struct.unpack("!HH", query[i + 1:i + 5])
    question = query[12:i + 5]
    name = ".".join(labels).lower()
    load()
    addresses = records.get(name)
    rcode = 0 if addresses is not None else 3
    answers = b""
    count = 0
    if addresses and qtype == 1:
        for address in addresses:
            answers += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
            count += 1
    # QR, opcode 0, AA, RD copied, RA; the rcode.
    out_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    return struct.pack("!HHHHHH", ident, out_flags, 1, count, 0, 0) + question + answers


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", port))
print(f"dns: serving {records_path} on UDP {port}", flush=True)
while True:
    data, peer = sock.recvfrom(4096)
    try:
        reply = answer(data)
    except Exception as e:  # a malformed query is dropped, the server keeps serving
        print(f"dns: bad query from {peer}: {e}", flush=True)
        continue
    if reply:
        sock.sendto(reply, peer)
