import Foundation
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

private func errorFrame(_ text: String) -> JSONValue { ["type": "ERROR", "payload": ["msg": .string(text)]] }

/// The policy program (`--auth-program`): `examples/auth-policy.py`, spoken to in JSON lines by
/// the auth helper. Behaviours 61, 62 and 65 (the fork's auth and key functions).
@Suite("Auth policy program", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct AuthProgramTests {
    /// `examples/auth-policy.py` in this package (found from this source file's path).
    static var example: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/auth-policy.py").path
    }

    typealias T = AuthHelperProcessTests

    @Test("61 the program receives id, token, key, ip and version; allow → OPEN; deny 'nope' → ERROR 'nope' + close")
    func program() async throws {
        try await ServerProcess.withServer(["--auth-program", Self.example]) { server in
            let s = try T.endpoint(server)
            let mark = server.logLines.count
            #expect(try await T.attempt(s, id: "alice", token: "alice-token", extra: "&version=1.5.4") == ["type": "OPEN"])
            _ = try await server.waitForLog(from: mark, "the program's view of the query") {
                $0.contains("policy: auth id=alice key=peerjs ip=127.0.0.1 version=1.5.4 token=<11 chars>")
            }
            #expect(try await T.attempt(s, id: "alice", token: "bad") == errorFrame("nope"))
            // Events reach the program too.
            _ = try await server.waitForLog(from: mark, "the program's connection event") {
                $0.contains("policy: connection id=alice") && $0.contains("key=peerjs")
            }
        }
    }

    @Test("61b at --log-level notice (no helper log lines for events) the program still gets connection and disconnect events")
    func programEventsAtNotice() async throws {
        try await ServerProcess.withServer(["--auth-program", Self.example, "--log-level", "notice"]) { server in
            let s = try T.endpoint(server)
            let mark = server.logLines.count
            let ws = try await s.connect(id: "bob", token: "bob-token")
            #expect(try await ws.nextJSON() == ["type": "OPEN"])
            _ = try await server.waitForLog(from: mark, "the program's connection event") {
                $0.contains("policy: connection id=bob")
            }
            await ws.close()
            _ = try await server.waitForLog(from: mark, "the program's disconnect event") {
                $0.contains("policy: disconnect id=bob")
            }
        }
    }

    @Test("62 a program that never answers → 'Auth Timeout' within the deadline; one that fails → 'Error on Auth'; the program comes back")
    func timeoutAndFailure() async throws {
        try await ServerProcess.withServer(["--auth-program", Self.example, "--auth-timeout", "700"]) { server in
            let s = try T.endpoint(server)
            #expect(try await T.attempt(s, id: "throw1", token: "x") == errorFrame("Error on Auth"))
            let helper = try await T.waitForHelper(server)
            let start = Stopwatch.now
            #expect(try await T.attempt(s, id: "sleepy", token: "x") == errorFrame("Auth Timeout"))
            let elapsed = Stopwatch.milliseconds(since: start)
            #expect(elapsed >= 600 && elapsed < 2500, "Auth Timeout after \(elapsed) ms (deadline 700)")
            // The hung program is replaced (with its helper); the next legitimate client is admitted.
            _ = try await T.waitForHelper(server, other: helper)
            var admitted: JSONValue = .null
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                admitted = try await T.attempt(s, id: "bob", token: "bob-token")
                if admitted == ["type": "OPEN"] { break }
                #expect(admitted == errorFrame("Error on Auth") || admitted == errorFrame("Auth Timeout"), "\(admitted)")
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(admitted == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "bob", token: "wrong") == errorFrame("nope"))
        }
    }

    @Test("65 a key policy in the program: admin may use 'private' (OPEN), others get 'Invalid Key'")
    func keyPolicy() async throws {
        try await ServerProcess.withServer(["--auth-program", Self.example, "--keys", "peerjs,private"]) { server in
            let s = try T.endpoint(server)
            #expect(try await T.attempt(s, id: "admin", token: "admin-token", key: "private") == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "alice", token: "alice-token", key: "private") == errorFrame("Invalid Key"))
            #expect(try await T.attempt(s, id: "alice", token: "alice-token", key: "peerjs") == ["type": "OPEN"])
        }
    }

    @Test("a stalled broker while the helper answers a burst: verdicts wait for room in the channel (~270 fit), none is lost, every client is admitted")
    func stalledBroker() async throws {
        let count = 400
        // Holds every answer until SIGUSR1, then allows them all at once.
        let program = try T.TempFile("""
            #!/usr/bin/env python3
            import os, signal, sys
            held = 0
            def release(signum, frame):
                global held
                sys.stdout.write('{"allow":true}\\n' * held)
                sys.stdout.flush()
                held = 0
            signal.signal(signal.SIGUSR1, release)
            for line in sys.stdin:
                if '"auth"' in line:
                    held += 1
                    if held == \(count):
                        print(f"policy: holding {held} pid={os.getpid()}", file=sys.stderr, flush=True)
            """, name: "hold.py")
        chmod(program.path, 0o755)
        try await ServerProcess.withServer(["--auth-program", program.path, "--auth-timeout", "20000"]) { server in
            let s = try T.endpoint(server)
            let clients = try await T.requestUpgrades(s, (0..<count).map { ("s\($0)", "st\($0)") })
            let holding = try await server.waitForLog("the program holding every question") { $0.contains("policy: holding \(count)") }
            let programPID = try #require(holding.split(separator: "pid=").last.flatMap { Int32($0.prefix { $0.isNumber }) })
            let broker = try #require(server.brokerPID())
            kill(broker, SIGSTOP)
            try await T.waitForState(of: [broker], stopped: true)
            let mark = server.logLines.count
            kill(programPID, SIGUSR1)
            _ = try await server.waitForLog(from: mark, "the helper holding verdicts") { $0.contains("the broker is not reading its verdicts") }
            kill(broker, SIGCONT)
            await T.expectAllOpen(clients)
            #expect(!server.logLines.contains { $0.contains("could not answer the broker") })
        }
    }
}
