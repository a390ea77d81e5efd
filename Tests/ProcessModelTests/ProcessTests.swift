import Foundation
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The real supervisor/broker pair: each test starts its own `peerjs`, so it may kill parts of it.
@Suite("Process model", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct ProcessModel {
    static func endpoint(_ server: ServerProcess) -> Endpoint {
        Endpoint(
            host: server.host,
            port: server.port,
            basePath: server.basePath,
            key: server.key,
            server: server,
            arguments: server.arguments
        )
    }

    static func brokerPIDLogged(_ line: String) -> Int32? {
        guard let range = line.range(of: "pid=") else { return nil }
        return Int32(line[range.upperBound...].prefix(while: { $0.isNumber }))
    }

    @Test("P1 the supervisor spawns one broker child and logs 'broker started … pid=<n>'")
    func brokerChild() async throws {
        try await ServerProcess.withServer(["--allow_discovery"]) { server in
            let line = try await server.waitForLog("containing 'broker started' and 'pid='") {
                $0.contains("broker started") && $0.contains("pid=")
            }
            let logged = try #require(Self.brokerPIDLogged(line), "no pid in: \(line)")
            let broker = try await server.waitForBroker()
            #expect(broker == logged, "children of \(server.pid): \(server.childPIDs()); log: \(line)")
            #expect(broker != server.pid)
            let s = Self.endpoint(server)
            let a = try await s.register("a")
            let b = try await s.register("b")
            try await a.send(type: "OFFER", to: b.id, payload: offerPayload)
            #expect(try await b.ws.nextJSON()["src"] == .string(a.id))
        }
    }

    @Test("P2 SIGKILL of the broker: the supervisor logs the signal, starts a new broker, which serves clients")
    func brokerRestart() async throws {
        try await ServerProcess.withServer(["--allow_discovery"]) { server in
            let s = Self.endpoint(server)
            let old = try await server.waitForBroker()
            let before = try await s.register("before")
            let mark = server.logLines.count
            kill(old, SIGKILL)
            let exitLine = try await server.waitForLog(from: mark, "naming broker \(old) and its signal 9") { line in
                let lower = line.lowercased()
                return line.contains("\(old)")
                    && (lower.contains("sigkill") || lower.contains("signal 9") || lower.contains("signal: 9")
                        || lower.contains("signal=9"))
            }
            let startedLine = try await server.waitForLog(from: mark, "'broker started … pid=' for the new broker") {
                $0.contains("broker started") && $0.contains("pid=")
            }
            let new = try await server.waitForBroker(other: old)
            #expect(Self.brokerPIDLogged(startedLine) == new, "\(startedLine); children: \(server.childPIDs())")
            #expect(!exitLine.isEmpty)
            #expect(ServerProcess.isAlive(server.pid), "the supervisor must survive its broker")
            // Connections of the dead broker are gone.
            try await before.ws.waitForClose(timeout: .seconds(5))
            // The new broker serves new clients once it says it is ready.
            _ = try await server.waitForLog(from: mark, "the new broker's ready line") { $0.contains("broker pid=\(new) ready") }
            let first = try await s.register("a")
            let b = try await s.register("b")
            try await first.send(type: "OFFER", to: b.id, payload: offerPayload)
            #expect(
                try await b.ws.nextJSON() == [
                    "type": "OFFER", "src": .string(first.id), "dst": .string(b.id), "payload": offerPayload,
                ]
            )
            #expect(try await s.listedPeers() == [first.id, b.id])
        }
    }

    @Test("P3 SIGTERM stops the supervisor and its broker")
    func sigterm() async throws {
        let server = try await ServerProcess.launch([])
        let broker = try await server.waitForBroker()
        let s = Self.endpoint(server)
        let peer = try await s.register("t")
        server.signal(SIGTERM)
        // The broker must go by the supervisor's doing: watched before the supervisor is reaped,
        // since reaping it kills what is left of its process group.
        let deadline = ContinuousClock.now + .seconds(8)
        while ServerProcess.isAlive(broker) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!ServerProcess.isAlive(broker), "broker \(broker) outlived the supervisor's SIGTERM")
        let status = await server.waitForExit(timeout: .seconds(8))
        if status == nil { server.printLog(header: "peerjs did not stop on SIGTERM") }
        await server.stop()
        #expect(status != nil, "the supervisor was still running 8 s after SIGTERM")
        #expect(status != .signaled(SIGKILL))
        try await peer.ws.waitForClose(timeout: .seconds(2))
    }

    @Test("P4 kebab-case flags are accepted (--alive-timeout, --allow-discovery, --expire-timeout, --concurrent-limit)")
    func kebabCaseFlags() async throws {
        try await ServerProcess.withServer([
            "--alive-timeout", "60000", "--allow-discovery", "--expire-timeout", "5000", "--concurrent-limit", "10",
            "--cleanup-out-msgs", "1000", "--max-message-size", "65536", "--handshake-timeout", "10000", "--proxied",
            "--cors", "https://a.example.test",
        ]) { server in
            let s = Self.endpoint(server)
            let peer = try await s.register("k")
            #expect(try await s.listedPeers() == [peer.id])
        }
    }

    @Test("P5 short flags -k, -t, -c are accepted (-k mykey: WS and HTTP use that key)")
    func shortFlags() async throws {
        try await ServerProcess.withServer(["-k", "mykey", "-t", "1000", "-c", "10", "--allow_discovery"]) { server in
            let s = Self.endpoint(server)
            #expect(s.key == "mykey")
            let peer = try await s.register("k")
            #expect(try await s.listedPeers() == [peer.id])
            let wrong = try await s.connect(id: Unique.id("k"), token: "t", key: "peerjs")
            #expect(try await wrong.nextJSON() == ["type": "ERROR", "payload": ["msg": "Invalid key provided"]])
            #expect(try await s.get("peerjs/id").status == 401)
        }
    }
}

@Suite("Command line", .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct CommandLineFlags {
    @Test("49 (E7) the documented default alive_timeout is 60000 ms (--help says so)")
    func aliveTimeoutDefault() async throws {
        let (status, output) = try await ServerProcess.run(["--help"])
        let text = output.joined(separator: "\n")
        #expect(status == .exited(0), "\(status): \(text)")
        #expect(text.contains("alive_timeout") || text.contains("alive-timeout"), "\(text)")
        #expect(text.contains("60000"), "--help must document the 60000 ms alive_timeout default:\n\(text)")
    }

    @Test(
        "CLI invalid flag values: one-line error naming the flag on stderr, exit status 64",
        arguments: [
            ["--port", "notaport"], ["--port", "70000"], ["--alive_timeout", "soon"], ["--expire_timeout", "-5"],
            ["--concurrent_limit", "many"], ["--max_message_size", "big"], ["--handshake_timeout", "x"],
            ["--cleanup_out_msgs", "0.5s"],
        ]
    )
    func invalidFlag(_ arguments: [String]) async throws {
        let (status, output) = try await ServerProcess.run(arguments + ["--host", "127.0.0.1"])
        let lines = output.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        #expect(status == .exited(64), "\(arguments): \(status); output: \(output)")
        #expect(lines.count == 1, "\(arguments): expected a one-line error, got \(lines.count) lines: \(output)")
        let name = arguments[0].trimmingCharacters(in: CharacterSet(charactersIn: "-"))
        let kebab = name.replacingOccurrences(of: "_", with: "-")
        #expect(
            lines.contains { $0.contains(name) || $0.contains(kebab) },
            "\(arguments): the error must name the flag: \(output)"
        )
    }

    @Test(
        "a setting too long for its process's hello stops the start with exit 78 and says the cap, never a restart loop",
        arguments: [
            ["--chroot", "/" + String(repeating: "c", count: 1100)],
            ["--user", String(repeating: "u", count: 65)],
            ["--auth-program", "/" + String(repeating: "p", count: 1100)],
        ]
    )
    func settingTooLongForHello(_ arguments: [String]) async throws {
        let (status, output) = try await ServerProcess.run(arguments + ["--host", "127.0.0.1", "--port", "0"])
        #expect(status == .exited(78), "\(status); output: \(output)")
        #expect(output.contains { $0.contains("too long") && $0.contains("at most") }, "\(output)")
    }
}
