import Foundation
import Glibc
import PeerJSTesting
import Testing

/// `--takeover-timeout` (issue 19, peerjs-server#224): a client that comes back with its id and a
/// new token after a reload or a network change gets the id from a socket that no longer answers.
/// The dead socket is a real client process stopped with SIGSTOP: its kernel still holds the TCP
/// connection open, but nothing answers the server's ping. 4000 ms, so that a live client process
/// on a loaded 2-core machine has room to answer.
@Suite(
    "Takeover of an id held by a dead socket, --takeover-timeout 4000",
    .disabled(if: ServerFixture.isExternal, needsOwnServer),
    .peerServer("--takeover-timeout", "4000", "--allow_discovery")
)
struct Takeover {
    static let idTaken: JSONValue = ["type": "ID-TAKEN", "payload": ["msg": "ID is taken"]]
    static let takeoverMs = 4000

    /// A PeerJS client in a process of its own (Python's standard library only): it registers
    /// `id` with `token`, prints `OPEN` once it got OPEN, then reads and answers pings until
    /// its socket closes (then prints `CLOSED`).
    static let client = #"""
        import base64, os, socket, sys
        host, port, path, id, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        s = socket.create_connection((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET {path}?key=peerjs&id={id}&token={token} HTTP/1.1\r\nHost: {host}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk: sys.exit("closed during the handshake")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]: sys.exit("not upgraded: " + head.decode())
        def frame():
            global buf
            while True:
                if len(buf) >= 2:
                    n, at = buf[1] & 0x7F, 2
                    if n == 126 and len(buf) >= 4: n, at = int.from_bytes(buf[2:4], "big"), 4
                    if n < 126 or at == 4:
                        if len(buf) >= at + n:
                            op, body, buf = buf[0] & 0x0F, buf[at:at + n], buf[at + n:]
                            return op, body
                chunk = s.recv(4096)
                if not chunk: return None, b""
                buf += chunk
        while True:
            op, body = frame()
            if op is None or op == 8: print("CLOSED", flush=True); break
            if op == 9: s.sendall(bytes([0x8A, 0x80 | len(body)]) + b"\0\0\0\0" + body)
            if op == 1 and b'"OPEN"' in body: print("OPEN", flush=True)
        """#

    /// Starts the client process for `id`/`token` and waits for its OPEN.
    func holder(_ s: Endpoint, id: String, token: String) async throws -> ChildProcess {
        let process = try ChildProcess("/usr/bin/env", ["python3", "-c", Self.client, s.host, String(s.port), s.wsPath, id, token])
        _ = try await process.waitForLine(timeout: .seconds(20), "the client's OPEN") { $0 == "OPEN" }
        return process
    }

    @Test("a holder stopped with SIGSTOP loses its id to a new token within --takeover-timeout; the new socket gets OPEN")
    func deadHolderTakenOver() async throws {
        let s = try Endpoint.current()
        let server = try #require(s.server)
        let id = Unique.id("tk")
        let old = try await holder(s, id: id, token: "before-reload")
        defer { old.killGroup() }
        old.signal(SIGSTOP)
        let mark = server.process.lines.count
        let start = Stopwatch.now
        let claimant = try await s.connect(id: id, token: "after-reload", timeout: .seconds(20))
        #expect(try await claimant.nextJSON(timeout: .seconds(20)) == ["type": "OPEN"])
        let elapsed = Stopwatch.milliseconds(since: start)
        #expect(elapsed >= Double(Self.takeoverMs) - 50, "OPEN after \(elapsed) ms, before the holder had its time to answer")
        _ = try await server.waitForLog(from: mark, "the holder's disconnect") {
            $0.contains("Client disconnected: \(id)") && $0.contains("taken over")
        }
        // The id now belongs to the new socket: it gets the relays.
        let sender = try await s.register("tks")
        try await sender.send(type: "OFFER", to: id, payload: ["sdp": "x"])
        #expect(try await claimant.nextJSON()["src"] == .string(sender.id))
        // The stopped client, resumed, finds its socket closed by the server.
        old.signal(SIGCONT)
        _ = try await old.waitForLine(timeout: .seconds(10), "the old client's close") { $0 == "CLOSED" }
        await claimant.close()
        await sender.ws.close()
    }

    @Test("a live holder (it answers the ping) keeps its id: the new token gets ID-TAKEN without waiting the deadline")
    func liveHolderKeepsID() async throws {
        let s = try Endpoint.current()
        let id = Unique.id("tl")
        let old = try await holder(s, id: id, token: "mine")
        defer { old.killGroup() }
        // Had the pong not counted, the deadline would have handed the id over (OPEN).
        let intruder = try await s.connect(id: id, token: "theirs")
        #expect(try await intruder.nextJSON(timeout: .seconds(10)) == Self.idTaken)
        try await intruder.waitForClose()
        #expect(try await s.listedPeers().contains(id))
        #expect(old.lines.contains("CLOSED") == false)
    }

    @Test("two claimants at once for a dead holder's id: one gets OPEN, the other ID-TAKEN")
    func twoClaimants() async throws {
        let s = try Endpoint.current()
        let id = Unique.id("t2")
        let old = try await holder(s, id: id, token: "gone")
        defer { old.killGroup() }
        old.signal(SIGSTOP)
        async let first = s.connect(id: id, token: "one", timeout: .seconds(20))
        async let second = s.connect(id: id, token: "two", timeout: .seconds(20))
        let claimants = try await [first, second]
        var answers: [JSONValue] = []
        for claimant in claimants { answers.append(try await claimant.nextJSON(timeout: .seconds(20))) }
        #expect(answers.filter { $0 == ["type": "OPEN"] }.count == 1, "\(answers)")
        #expect(answers.filter { $0 == Self.idTaken }.count == 1, "\(answers)")
        for claimant in claimants { await claimant.close() }
    }
}
