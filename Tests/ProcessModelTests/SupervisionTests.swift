import Foundation
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The supervisor's duties beyond the hand-off: crash-loop exit, drain on SIGTERM, reload on
/// SIGHUP, children ending with it, systemd socket activation and readiness, restart under load.
@Suite("Supervision", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct Supervision {
    static func endpoint(_ server: ServerProcess) -> Endpoint {
        Endpoint(host: server.host, port: server.port, basePath: server.basePath, key: server.key, server: server,
                 arguments: server.arguments)
    }

    /// Whether `pid` has ended (gone, or a zombie nobody has reaped yet).
    static func hasEnded(_ pid: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return true }
        return status.contains("State:\tZ")
    }

    @Test("S1 a broker that keeps dying makes the supervisor exit with status 1 (crash loop)")
    func crashLoop() async throws {
        let server = try await ServerProcess.launch([])
        defer { Task { await server.stop() } }
        var previous: Int32?
        for _ in 0..<6 {
            guard server.exitStatus == nil, ServerProcess.isAlive(server.pid) else { break }
            guard let broker = try? await server.waitForBroker(other: previous, timeout: .seconds(10)) else { break }
            kill(broker, SIGKILL)
            previous = broker
        }
        let status = await server.waitForExit(timeout: .seconds(10))
        #expect(status == .exited(1), "log:\n\(server.logLines.joined(separator: "\n"))")
        #expect(server.logLines.contains { $0.contains("giving up") })
    }

    @Test("S2 SIGTERM drains: peers get a 1001 close, both processes exit, status 0")
    func drain() async throws {
        let server = try await ServerProcess.launch([])
        let s = Self.endpoint(server)
        let peer = try await s.register("d")
        let broker = try await server.waitForBroker()
        server.signal(SIGTERM)
        let close = try await peer.ws.waitForClose(timeout: .seconds(5))
        #expect(close.receivedCloseFrame)
        #expect(close.code == 1001)
        #expect(await server.waitForExit(timeout: .seconds(10)) == .exited(0))
        let deadline = ContinuousClock.now + .seconds(5)
        while !Self.hasEnded(broker) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(Self.hasEnded(broker))
    }

    @Test("S3 SIGHUP re-reads --config and hands it to the broker; connected peers stay")
    func reload() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("peerjs-\(UUID().uuidString).conf")
        try "# test\nallow_discovery = false\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        try await ServerProcess.withServer(["--config", file.path]) { server in
            let s = Self.endpoint(server)
            let a = try await s.register("a")
            let b = try await s.register("b")
            #expect(try await s.get("\(s.key)/peers").status == 401)
            try "allow_discovery = true\n".write(to: file, atomically: true, encoding: .utf8)
            let mark = server.logLines.count
            server.signal(SIGHUP)
            _ = try await server.waitForLog(from: mark, "broker: configuration reloaded") {
                $0.contains("broker") && $0.contains("configuration reloaded")
            }
            #expect(try await s.listedPeers() == [a.id, b.id])
            try await a.send(type: "OFFER", to: b.id, payload: offerPayload)
            #expect(try await b.ws.nextJSON()["src"] == .string(a.id))

            // A broken file is refused; the running configuration stays.
            try "allow_discovery = maybe\n".write(to: file, atomically: true, encoding: .utf8)
            let mark2 = server.logLines.count
            server.signal(SIGHUP)
            _ = try await server.waitForLog(from: mark2, "reload failed … keeping") { $0.contains("reload failed") }
            #expect(try await s.get("\(s.key)/peers").status == 200)

            // Auth cannot be turned on by a reload (the broker started without a helper would let
            // everyone in): the whole reload is refused, discovery stays on, anyone registers.
            try "allow_discovery = false\nauth_users = /nonexistent/users\n".write(to: file, atomically: true, encoding: .utf8)
            let mark3 = server.logLines.count
            server.signal(SIGHUP)
            let refusal = try await server.waitForLog(from: mark3, "reload refused … auth settings") { $0.contains("reload refused") }
            #expect(refusal.contains("restart peerjs"))
            #expect(try await s.get("\(s.key)/peers").status == 200)
            _ = try await s.register("c")
        }
    }

    @Test("S4 EOF on its channel ends the broker: SIGKILL the supervisor and the broker exits")
    func brokerEndsWithSupervisor() async throws {
        let server = try await ServerProcess.launch([])
        defer { Task { await server.stop() } }
        let broker = try await server.waitForBroker()
        kill(server.pid, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(5)
        while !Self.hasEnded(broker) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(Self.hasEnded(broker), "broker \(broker) outlived its supervisor")
    }

    @Test("S5 socket activation: systemd-socket-activate passes the listener, READY=1 reaches NOTIFY_SOCKET")
    func socketActivation() async throws {
        let notify = try NotifySocket()
        defer { notify.close() }
        let port = try freePort()
        guard let process = try await Self.socketActivate(port: port, name: "http", notifySocket: notify.path) else { return }
        // The first connection starts the service; it waits in the listen queue meanwhile.
        let a = try await WSClient.connect(port: port, query: "key=peerjs&id=sa-a&token=t", timeout: .seconds(10))
        #expect(try await a.nextJSON() == ["type": "OPEN"])
        let messages = try await notify.receive(until: { $0.contains("READY=1") }, timeout: .seconds(10))
        #expect(messages.contains { $0.contains("READY=1") }, "notify messages: \(messages)")
        let b = try await WSClient.connect(port: port, query: "key=peerjs&id=sa-b&token=t")
        #expect(try await b.nextJSON() == ["type": "OPEN"])
        try await a.sendText(#"{"type":"OFFER","dst":"sa-b","payload":{"n":1}}"#)
        #expect(try await b.nextJSON()["src"] == .string("sa-a"))
        process.signal(SIGTERM)
        let stopping = try await notify.receive(until: { $0.contains("STOPPING=1") }, timeout: .seconds(10))
        #expect(stopping.contains { $0.contains("STOPPING=1") })
        await process.stop()
    }

    /// Starts our binary under `systemd-socket-activate` listening on 127.0.0.1:`port` with one
    /// socket named `name` (and NOTIFY_SOCKET passed through when given), once it listens. Nil,
    /// with an issue recorded, when the tool is missing.
    static func socketActivate(port: Int, name: String, notifySocket: String? = nil) async throws -> ChildProcess? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate") else {
            Issue.record("systemd-socket-activate is missing: scripts/setup.sh installs the systemd package")
            return nil
        }
        var environment: [String]?
        if let notifySocket {
            environment = ProcessInfo.processInfo.environment.filter { $0.key != "NOTIFY_SOCKET" }.map { "\($0.key)=\($0.value)" }
                + ["NOTIFY_SOCKET=\(notifySocket)"]
        }
        let launcher = ["/usr/bin/systemd-socket-activate", "-l", "127.0.0.1:\(port)", "--fdname=\(name)"]
            + (notifySocket == nil ? [] : ["-E", "NOTIFY_SOCKET"])
        let process = try ServerProcess.spawn(["--log-level", "notice"], launcher: launcher, environment: environment)
        _ = try await process.waitForLine("systemd-socket-activate's listening line") { $0.contains("as 3.") }
        return process
    }

    @Test("S6 SIGKILL of the broker under 1,000 peers: the listener stays open, a new broker serves")
    func restartUnderLoad() async throws {
        try await ServerProcess.withServer(["--concurrent_limit", "5000"]) { server in
            let s = Self.endpoint(server)
            var peers: [WSClient] = []
            try await withThrowingTaskGroup(of: WSClient.self) { group in
                for batch in 0..<10 {
                    for n in 0..<100 {
                        group.addTask {
                            let ws = try await s.connect(id: "load-\(batch)-\(n)", token: "t")
                            _ = try await ws.nextJSON()
                            return ws
                        }
                    }
                    for _ in 0..<100 { if let ws = try await group.next() { peers.append(ws) } }
                }
            }
            #expect(peers.count == 1000)
            let old = try await server.waitForBroker()
            let mark = server.logLines.count
            let start = ContinuousClock.now
            kill(old, SIGKILL)
            // The listening socket belongs to the supervisor: a TCP connect right after the kill is
            // accepted, never refused. (A connection handed to the broker in the instant it dies is
            // lost with it; later ones wait in the listen queue for the new broker.)
            let raw = try await RawTCPConnection.connect(port: s.port)
            await raw.close()
            let new = try await server.waitForBroker(other: old)
            _ = try await server.waitForLog(from: mark, "the new broker's ready line") { $0.contains("broker pid=\(new) ready") }
            let early = try await s.register("r")
            let restart = ContinuousClock.now - start
            print("S6: broker restart under 1,000 peers: first new registration \(restart) after SIGKILL")
            _ = try await server.waitForLog(from: mark, "the broker's signal") { $0.contains("signal 9") }
            // The first restart has no backoff; the bound that means something is the broker's own
            // 10 s start-up deadline (a slower broker is killed), not a stopwatch.
            #expect(restart < .seconds(10))
            let later = try await s.register("r")
            try await later.send(type: "OFFER", to: early.id, payload: offerPayload)
            #expect(try await early.ws.nextJSON()["src"] == .string(later.id))
            for ws in peers.prefix(20) {
                #expect(try await ws.waitForClose(timeout: .seconds(5)).receivedCloseFrame == false)
            }
            for ws in peers { await ws.abort() }
        }
    }
}

/// An AF_UNIX datagram socket standing in for systemd's notification socket.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(UUID().uuidString.prefix(8))").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw HarnessError("bind \(path): errno \(errno)") }
    }

    /// Messages received until one satisfies `done` or `timeout` passes (looking without
    /// blocking, and sleeping between looks).
    func receive(until done: (String) -> Bool, timeout: Duration) async throws -> [String] {
        var messages: [String] = []
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 0) > 0 else {
                try await Task.sleep(for: .milliseconds(10))
                continue
            }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { continue }
            let message = String(decoding: buffer.prefix(count), as: UTF8.self)
            messages.append(message)
            if done(message) { break }
        }
        return messages
    }

    func close() {
        _ = Glibc.close(fd)
        unlink(path)
    }
}

