#!/usr/bin/env python3
"""A minimal PeerJS WebSocket client (standard library only, for a bare Debian rootfs):
connects to ws://HOST:PORT/peerjs?key=...&id=...&token=..., prints the first text frame and
exits 0 when it is {"type":"OPEN"}. Usage: ws-open.py [host] [port] [id] [key]"""
import base64, json, os, socket, sys

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 9000
peer = sys.argv[3] if len(sys.argv) > 3 else "install-test"
api_key = sys.argv[4] if len(sys.argv) > 4 else "peerjs"
sock = socket.create_connection((host, port), timeout=10)
sock.settimeout(10)
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall((f"GET /peerjs?key={api_key}&id={peer}&token=t{peer} HTTP/1.1\r\nHost: {host}:{port}\r\n"
              f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n").encode())
buffer = b""

def need(count):
    global buffer
    while len(buffer) < count:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit(f"connection closed after {buffer!r}")
        buffer += chunk
    data, buffer = buffer[:count], buffer[count:]
    return data

while b"\r\n\r\n" not in buffer:
    chunk = sock.recv(65536)
    if not chunk:
        sys.exit(f"connection closed during the handshake: {buffer!r}")
    buffer += chunk
head, buffer = buffer.split(b"\r\n\r\n", 1)
status = head.split(b"\r\n", 1)[0].decode()
if " 101 " not in status + " ":
    sys.exit(f"no WebSocket upgrade: {status}")
first, second = need(2)
length = second & 0x7F
if length == 126:
    length = int.from_bytes(need(2), "big")
elif length == 127:
    length = int.from_bytes(need(8), "big")
payload = need(length).decode()
print(payload)
message = json.loads(payload)
sock.close()
sys.exit(0 if first & 0x0F == 1 and message.get("type") == "OPEN" else 1)
