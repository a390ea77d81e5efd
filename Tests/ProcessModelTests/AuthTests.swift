import Foundation
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

private func errorFrame(_ text: String) -> JSONValue { ["type": "ERROR", "payload": ["msg": .string(text)]] }

/// PROTOCOL.md §9 and behaviours 60–69 against the real binary with the real auth helper process
/// (`--role auth`, its own user, seccomp `auth`), plus the helper's failure modes.
@Suite("Auth helper", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct AuthHelperProcessTests {
    static let users = """
        # id token [key ...]
        u1 t1
        alice alice-token
        roomie r-token room
        """

    /// A users file in a temporary directory, readable by the helper's user.
    final class TempFile: Sendable {
        let path: String
        init(_ text: String, name: String = "users") throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("peerjs-auth-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            chmod(directory.path, 0o755)
            path = directory.appendingPathComponent(name).path
            try text.write(toFile: path, atomically: false, encoding: .utf8)
            chmod(path, 0o644)
        }
        func write(_ text: String) throws { try text.write(toFile: path, atomically: false, encoding: .utf8) }
        deinit { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
    }

    /// Throws nothing; `try` makes the closures using it throwing for the #expect(try …) macros.
    static func endpoint(_ server: ServerProcess, key: String? = nil) throws -> Endpoint {
        Endpoint(host: server.host, port: server.port, basePath: server.basePath, key: key ?? server.key, server: server,
                 arguments: server.arguments)
    }

    /// The auth helper's pid: the supervisor's child started with `--role auth`.
    static func helperPID(_ server: ServerProcess) -> Int32? {
        for kid in server.childPIDs() {
            guard let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(kid)/cmdline")) else { continue }
            let args = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if let index = args.firstIndex(of: "--role"), index + 1 < args.count, args[index + 1] == "auth" { return kid }
        }
        return nil
    }

    static func waitForHelper(_ server: ServerProcess, other excluded: Int32? = nil) async throws -> Int32 {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if let pid = helperPID(server), pid != excluded { return pid }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw HarnessError("no auth helper (other than \(excluded.map(String.init) ?? "none")) within 10 s")
    }

    /// Waits until a helper started after log line `mark` can answer: the broker has taken its
    /// channel (`auth helper connected`) and the helper has read its policy (`auth helper ready`).
    /// A question asked after both is answered by it, within the deadline.
    static func waitForHelperReady(_ server: ServerProcess, from mark: Int) async throws {
        _ = try await server.waitForLog(from: mark, "the broker's 'auth helper connected'") { $0.contains("auth helper connected") }
        _ = try await server.waitForLog(from: mark, "the new helper's 'auth helper ready'") { $0.contains("auth helper ready") }
    }

    /// Connects and returns the first message and whether the server then closed the socket.
    static func attempt(_ s: Endpoint, id: String, token: String, key: String? = nil, extra: String = "") async throws
        -> JSONValue
    {
        let ws = try await s.connect(id: id, token: token, key: key, extra: extra)
        let first = try await ws.nextJSON(timeout: .seconds(10))
        if first != ["type": "OPEN"] { _ = try await ws.waitForClose() } else { await ws.close() }
        return first
    }

    @Test("60 users file: WS(u1,t1) → OPEN; WS(u1,bad) and WS(u2,t1) → ERROR 'Invalid ID' + close")
    func usersFile() async throws {
        let file = try TempFile(Self.users)
        try await ServerProcess.withServer(["--auth-users", file.path]) { server in
            let s = try Self.endpoint(server)
            #expect(try await Self.attempt(s, id: "u1", token: "t1") == ["type": "OPEN"])
            #expect(try await Self.attempt(s, id: "u1", token: "bad") == errorFrame("Invalid ID"))
            #expect(try await Self.attempt(s, id: "u2", token: "t1") == errorFrame("Invalid ID"))
            // Auth runs after the parameter check (§9, suggested mapping).
            let ws = try await s.connect(query: "key=peerjs&id=u1")
            #expect(try await ws.nextJSON() == errorFrame("No id, token, or key supplied to websocket server"))
        }
    }

    @Test("63 auth runs before registration: a denied id is not in /peers and does not block a later legitimate one")
    func beforeRegistration() async throws {
        let file = try TempFile(Self.users)
        try await ServerProcess.withServer(["--auth-users", file.path, "--allow_discovery"]) { server in
            let s = try Self.endpoint(server)
            let denied = try await s.connect(id: "alice", token: "wrong")
            #expect(try await denied.nextJSON() == errorFrame("Invalid ID"))
            _ = try await denied.waitForClose()
            #expect(!(try await s.listedPeers()).contains("alice"))
            let peer = try await s.register(id: "alice", token: "alice-token")
            #expect(try await s.listedPeers().contains("alice"))
            await peer.ws.close()
        }
    }

    @Test("64 --keys room,private: key room → OPEN, key other → 'Invalid key provided'; a users-file key list → 'Invalid Key'")
    func rooms() async throws {
        try await ServerProcess.withServer(["--keys", "room,private"]) { server in
            let s = try Self.endpoint(server)
            #expect(try await Self.attempt(s, id: Unique.id("r"), token: "t", key: "room") == ["type": "OPEN"])
            #expect(try await Self.attempt(s, id: Unique.id("p"), token: "t", key: "private") == ["type": "OPEN"])
            #expect(try await Self.attempt(s, id: Unique.id("o"), token: "t", key: "other") == errorFrame("Invalid key provided"))
            #expect(try await Self.attempt(s, id: Unique.id("d"), token: "t", key: "peerjs") == errorFrame("Invalid key provided"))
        }
        let file = try TempFile(Self.users)
        try await ServerProcess.withServer(["--keys", "room,private", "--auth-users", file.path]) { server in
            let s = try Self.endpoint(server)
            #expect(try await Self.attempt(s, id: "roomie", token: "r-token", key: "room") == ["type": "OPEN"])
            #expect(try await Self.attempt(s, id: "roomie", token: "r-token", key: "private") == errorFrame("Invalid Key"))
            // Auth before the key check: a bad token in an unknown room is 'Invalid ID'.
            #expect(try await Self.attempt(s, id: "roomie", token: "bad", key: "other") == errorFrame("Invalid ID"))
            #expect(try await Self.attempt(s, id: "alice", token: "alice-token", key: "other") == errorFrame("Invalid key provided"))
        }
    }

    @Test("66 rooms isolate: A in room, B in private; A→B OFFER is not delivered and A gets EXPIRE with src B")
    func isolation() async throws {
        try await ServerProcess.withServer(["--keys", "room,private", "--expire_timeout", "300", "--cleanup_out_msgs", "50"]) { server in
            let s = try Self.endpoint(server)
            let a = try await Self.endpoint(server, key: "room").register("a")
            let b = try await Self.endpoint(server, key: "private").register("b")
            try await a.send(type: "OFFER", to: b.id, payload: ["sdp": "x"])
            #expect(try await a.ws.nextJSON(timeout: .seconds(5)) == ["type": "EXPIRE", "src": .string(b.id), "dst": .string(a.id)])
            try await b.ws.expectNoFrame(within: .milliseconds(300))
            _ = s
            await a.ws.close()
            await b.ws.close()
        }
    }

    @Test("67 one id in two rooms at once: each gets only its room's messages; GET room/peers lists only room")
    func sameIDTwoRooms() async throws {
        try await ServerProcess.withServer(["--keys", "room,private", "--allow_discovery"]) { server in
            let room = try Self.endpoint(server, key: "room")
            let priv = try Self.endpoint(server, key: "private")
            let id = Unique.id("twin")
            let inRoom = try await room.register(id: id, token: "t1")
            let inPrivate = try await priv.register(id: id, token: "t2")
            let sender = try await room.register("s")
            let other = try await priv.register("o")
            try await sender.send(type: "OFFER", to: id, payload: ["from": "room"])
            try await other.send(type: "OFFER", to: id, payload: ["from": "private"])
            #expect(try await inRoom.ws.nextJSON()["payload"] == ["from": "room"])
            #expect(try await inPrivate.ws.nextJSON()["payload"] == ["from": "private"])
            try await inRoom.ws.expectNoFrame(within: .milliseconds(200))
            try await inPrivate.ws.expectNoFrame(within: .milliseconds(200))
            #expect(try await room.listedPeers() == [id, sender.id])
            #expect(try await priv.listedPeers() == [id, other.id])
            for peer in [inRoom, inPrivate, sender, other] { await peer.ws.close() }
        }
    }

    @Test("69 connection/disconnect events reach the helper with the key: one log line each from the helper")
    func events() async throws {
        let file = try TempFile(Self.users)
        try await ServerProcess.withServer(["--auth-users", file.path, "--keys", "room"]) { server in
            let s = try Self.endpoint(server, key: "room")
            let mark = server.logLines.count
            let peer = try await s.register(id: "roomie", token: "r-token")
            let connected = try await server.waitForLog(from: mark, "auth helper: connection") {
                $0.contains("peerjs[auth]") && $0.contains("connection id=roomie key=room ip=127.0.0.1")
            }
            await peer.ws.close()
            _ = try await server.waitForLog(from: mark, "auth helper: disconnect") {
                $0.contains("peerjs[auth]") && $0.contains("disconnect id=roomie key=room ip=127.0.0.1")
            }
            let lines = server.logLines.dropFirst(mark).filter { $0.contains("peerjs[auth]") && $0.contains("id=roomie") }
            #expect(lines.count == 2, "one line per event: \(lines)")
            _ = connected
        }
    }

    @Test("a malformed users file is a start-up error naming file and line")
    func malformedUsersFile() async throws {
        let file = try TempFile("ok token\nbroken\n")
        let (status, output) = try await ServerProcess.run(
            ["--host", "127.0.0.1", "--port", "0", "--auth-users", file.path] + ServerProcess.sandboxUserArguments([]))
        #expect(status == .exited(78))
        #expect(output.contains { $0.contains("\(file.path):2:") }, "\(output)")
    }

    @Test("SIGHUP: the helper re-reads the users file; peers stay")
    func reload() async throws {
        let file = try TempFile("old old-token\n")
        try await ServerProcess.withServer(["--auth-users", file.path]) { server in
            let s = try Self.endpoint(server)
            let old = try await s.register(id: "old", token: "old-token")
            #expect(try await Self.attempt(s, id: "new", token: "new-token") == errorFrame("Invalid ID"))
            try file.write("new new-token\n")
            let mark = server.logLines.count
            server.signal(SIGHUP)
            _ = try await server.waitForLog(from: mark, "auth policy reloaded") { $0.contains("auth policy reloaded") }
            #expect(try await Self.attempt(s, id: "new", token: "new-token") == ["type": "OPEN"])
            #expect(try await Self.attempt(s, id: "old2", token: "old-token") == errorFrame("Invalid ID"))
            try await old.heartbeat()
            #expect(!old.ws.isClosed)
            await old.ws.close()
        }
    }

    @Test("helper SIGKILL: clients get the error within the deadline, never an OPEN; the helper comes back and admits the next client")
    func helperKilled() async throws {
        let file = try TempFile(Self.users)
        try await ServerProcess.withServer(["--auth-users", file.path, "--auth-timeout", "2000"]) { server in
            let s = try Self.endpoint(server)
            let helper = try await Self.waitForHelper(server)
            try await Self.waitForHelperReady(server, from: 0)
            let before = try await s.register(id: "alice", token: "alice-token")
            // A stopped helper: the question waits, the deadline denies.
            kill(helper, SIGSTOP)
            let start = Stopwatch.now
            #expect(try await Self.attempt(s, id: "u1", token: "t1") == errorFrame("Auth Timeout"))
            let timedOut = Stopwatch.milliseconds(since: start)
            #expect(timedOut >= 1900 && timedOut < 5000, "Auth Timeout after \(timedOut) ms (deadline 2000)")
            // A question in flight when the helper dies: denied at once, not admitted.
            let pending = try await s.connect(id: "u1", token: "t1")
            try await Task.sleep(for: .milliseconds(100))  // let the broker send the query (no answer can come)
            let mark = server.logLines.count
            kill(helper, SIGKILL)
            let first = try await pending.nextJSON(timeout: .seconds(6))
            // Bounded by nextJSON's 6 s: the question is answered, never left hanging on a dead helper.
            #expect(first == errorFrame("Error on Auth") || first == errorFrame("Auth Timeout"), "\(first)")
            _ = try await pending.waitForClose()
            // The supervisor logs why and starts a new helper; the next legitimate client is admitted.
            _ = try await server.waitForLog("auth helper restart") { $0.contains("auth helper pid=\(helper)") && $0.contains("restarting it") }
            try await Self.waitForHelperReady(server, from: mark)
            #expect(try await Self.attempt(s, id: "u1", token: "t1") == ["type": "OPEN"])
            #expect(try await Self.attempt(s, id: "u1", token: "wrong") == errorFrame("Invalid ID"))
            // The peer registered before the failure kept its connection, and the broker was not restarted.
            try await before.heartbeat()
            #expect(!before.ws.isClosed)
            #expect(server.logLines.filter { $0.contains("broker started") }.count == 1)
            await before.ws.close()
        }
    }

    @Test("a broker restart brings a fresh helper connected to the new broker; auth still decides")
    func brokerRestart() async throws {
        let file = try TempFile(Self.users)
        try await ServerProcess.withServer(["--auth-users", file.path]) { server in
            let s = try Self.endpoint(server)
            let broker = try await server.waitForBroker()
            _ = try await Self.waitForHelper(server)
            let mark = server.logLines.count
            kill(broker, SIGKILL)
            let new = try await server.waitForBroker(other: broker)
            _ = try await server.waitForLog(from: mark, "the new broker's ready line") { $0.contains("broker pid=\(new) ready") }
            try await Self.waitForHelperReady(server, from: mark)
            #expect(try await Self.attempt(s, id: "u1", token: "t1") == ["type": "OPEN"])
            #expect(try await Self.attempt(s, id: "u1", token: "bad") == errorFrame("Invalid ID"))
        }
    }

    @Test("68 [§13 decision] a second WS for a live id with the same token takes over (OPEN; the old socket is closed), auth asked again")
    func sameTokenTakesOver() async throws {
        let file = try TempFile(Self.users)
        try await ServerProcess.withServer(["--auth-users", file.path]) { server in
            let s = try Self.endpoint(server)
            let first = try await s.register(id: "alice", token: "alice-token")
            let second = try await s.register(id: "alice", token: "alice-token")
            _ = try await first.ws.waitForClose()
            #expect(try await Self.attempt(s, id: "alice", token: "other") == errorFrame("Invalid ID"))
            await second.ws.close()
        }
    }

    @Test("SIGSTOP then SIGCONT of broker and helper (a debugger, `systemctl freeze`): both live on (the filters allow restart_syscall); questions asked meanwhile each time out at their own deadline")
    func stopAndContinue() async throws {
        let file = try TempFile(Self.users)
        try await ServerProcess.withServer(["--auth-users", file.path, "--auth-timeout", "2000"]) { server in
            let s = try Self.endpoint(server)
            try await Self.waitForHelperReady(server, from: 0)
            #expect(try await Self.attempt(s, id: "u1", token: "t1") == ["type": "OPEN"])
            let broker = try #require(server.brokerPID())
            let helper = try await Self.waitForHelper(server)
            for pid in [broker, helper] { kill(pid, SIGSTOP) }
            try await Self.waitForState(of: [broker, helper], stopped: true)
            kill(broker, SIGCONT)
            try await Self.waitForState(of: [broker], stopped: false)
            // Three questions 200 ms apart while the helper is stopped: one deadline each.
            let timings = try await withThrowingTaskGroup(of: (JSONValue, Double).self) { group in
                for index in 0..<3 {
                    group.addTask {
                        try await Task.sleep(for: .milliseconds(200 * index))
                        let start = Stopwatch.now
                        let first = try await Self.attempt(s, id: "u1", token: "t1")
                        return (first, Stopwatch.milliseconds(since: start))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for (first, elapsed) in timings {
                #expect(first == errorFrame("Auth Timeout"))
                #expect(elapsed >= 1900 && elapsed < 5000, "Auth Timeout after \(elapsed) ms (deadline 2000)")
            }
            kill(helper, SIGCONT)
            try await Self.waitForState(of: [helper], stopped: false)
            // The helper now answers the stale questions too; the broker ignores those answers.
            #expect(try await Self.attempt(s, id: "u1", token: "t1") == ["type": "OPEN"])
            #expect(try await Self.attempt(s, id: "u1", token: "bad") == errorFrame("Invalid ID"))
            #expect(ServerProcess.isAlive(broker) && server.brokerPID() == broker, "the broker died after SIGCONT")
            #expect(ServerProcess.isAlive(helper) && Self.helperPID(server) == helper, "the helper died after SIGCONT")
        }
    }

    @Test("a burst of more questions than the channel holds (~270 with the default socket buffer) while the helper lags: every one is asked and admitted when it catches up, none denied")
    func burstWhileHelperLags() async throws {
        let count = 400  // before the fix, ~120 of these were denied 'Error on Auth' at once
        let file = try TempFile((0..<count).map { "b\($0) bt\($0)" }.joined(separator: "\n"))
        try await ServerProcess.withServer(["--auth-users", file.path, "--auth-timeout", "20000"]) { server in
            let s = try Self.endpoint(server)
            let helper = try await Self.waitForHelper(server)
            kill(helper, SIGSTOP)
            try await Self.waitForState(of: [helper], stopped: true)
            let clients = try await Self.requestUpgrades(s, (0..<count).map { ("b\($0)", "bt\($0)") })
            kill(helper, SIGCONT)
            await Self.expectAllOpen(clients)
            #expect(!server.logLines.contains { $0.contains("cannot ask the auth helper") })
        }
    }

    /// Sends one WebSocket upgrade request per (id, token) on raw connections, and returns when
    /// the broker has taken them all in (the 101 waits for the verdict, so nothing is awaited
    /// per request). The broker handles hand-offs in order on one loop: once a request made
    /// after these is answered, their questions have been asked or held back.
    static func requestUpgrades(_ s: Endpoint, _ peers: [(id: String, token: String)]) async throws -> [RawTCPConnection] {
        var clients: [RawTCPConnection] = []
        for (id, token) in peers {
            let client = try await RawTCPConnection.connect(host: s.host, port: s.port)
            await client.send(SharedServer.Handshake.request(s, id: id, token: token, headers: SharedServer.Handshake.standard))
            clients.append(client)
        }
        #expect(try await s.get("\(s.key)/id").status == 200)
        return clients
    }

    /// Expects every client's first frame to be OPEN (within 10 s), then closes them.
    static func expectAllOpen(_ clients: [RawTCPConnection]) async {
        let open = SharedServer.Handshake.open
        var refused: [String] = []
        for (index, client) in clients.enumerated() where !(await client.waitForData(timeout: .seconds(10)) { $0.ends(with: open) }) {
            refused.append("#\(index): \(String(decoding: client.received.suffix(60), as: UTF8.self))")
        }
        #expect(refused.isEmpty, "\(refused.count) of \(clients.count) not admitted, e.g. \(refused.prefix(3))")
        for client in clients { await client.close() }
    }

    /// Waits (bounded) until every pid is in state T (stopped) or, with `stopped: false`, none is.
    static func waitForState(of pids: [Int32], stopped: Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            let states = pids.map { pid -> Bool in
                guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                    let close = stat.lastIndex(of: ")")
                else { return false }
                return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("T")
            }
            if states.allSatisfy({ $0 == stopped }) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw HarnessError("processes \(pids) did not become \(stopped ? "stopped" : "running") within 5 s")
    }
}
