// Several instances as one (issue 18): real PostgreSQL servers (scripts/pg-scratch.sh, Debian's
// `postgresql`, which scripts/setup.sh installs) and two real `peerjs` instances on 127.0.0.1.
// Each test starts its own database, so stopping one stops nothing else.

import Foundation
import Glibc
import PeerJSTesting
import Testing

/// A throwaway PostgreSQL server (scripts/pg-scratch.sh) on a free port of 127.0.0.1.
struct ScratchPostgres {
    let directory: String
    let port: Int
    let password = "peerjs-test-\(Unique.token(8))"
    let passwordFile: String

    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/pg-scratch.sh").path
    }

    /// Whether a PostgreSQL server can be started here (Debian's package installed).
    static var available: Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).contains {
            FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\($0)/bin/postgres")
        }
    }

    static func start() async throws -> ScratchPostgres {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("peerjs-pg-\(Unique.token(8))").path
        let server = ScratchPostgres(directory: directory, port: try freePort(), passwordFile: directory + ".password")
        try (server.password + "\n").write(toFile: server.passwordFile, atomically: true, encoding: .utf8)
        chmod(server.passwordFile, 0o600)
        try await server.run("start", server.directory, String(server.port), server.password)
        return server
    }

    func run(_ arguments: String...) async throws {
        let (status, output) = try await ChildProcess.run("/bin/bash", [Self.script] + arguments, timeout: .seconds(60))
        guard status == .exited(0) else {
            throw HarnessError("pg-scratch.sh \(arguments.first ?? "") failed (\(status)): \(output.suffix(20).joined(separator: "\n"))")
        }
    }

    func stop() async throws { try await run("stop", directory) }
    func resume() async throws { try await run("start", directory, String(port), password) }

    func remove() async {
        try? await run("kill", directory)
        try? FileManager.default.removeItem(atPath: directory)
        try? FileManager.default.removeItem(atPath: passwordFile)
    }

    var url: String { "postgres://peerjs@127.0.0.1:\(port)/peerjs" }

    /// The flags of one instance named `instance` in this cluster.
    func flags(_ instance: String, expiry: Int = 30) -> [String] {
        ["--cluster", url, "--cluster-password-file", passwordFile, "--cluster-instance", instance,
         "--cluster-expiry", String(expiry), "--allow_discovery"]
    }
}

/// An instance of the cluster: its server, and registration through it.
struct Instance {
    let server: ServerProcess

    static func launch(_ flags: [String]) async throws -> Instance {
        let server = try await ServerProcess.launch(flags)
        let instance = Instance(server: server)
        try await instance.waitForDirectory()
        return instance
    }

    /// Waits for the broker's "peer directory available" line after log line `from`.
    func waitForDirectory(from start: Int = 0, timeout: Duration = .seconds(20)) async throws {
        _ = try await server.waitForLog(from: start, timeout: timeout, "peer directory available") {
            $0.contains("peer directory available")
        }
    }

    func connect(id: String, token: String) async throws -> WSClient {
        try await WSClient.connect(
            host: server.host, port: server.port, path: server.webSocketPath, query: "key=peerjs&id=\(id)&token=\(token)")
    }

    func register(_ prefix: String, id: String? = nil, token: String? = nil) async throws -> Peer {
        let id = id ?? Unique.id(prefix)
        let token = token ?? Unique.token()
        let ws = try await connect(id: id, token: token)
        let first = try await ws.nextJSON()
        guard first == ["type": "OPEN"] else { throw HarnessError("registering \(id): expected OPEN, got \(first)") }
        return Peer(id: id, token: token, ws: ws)
    }

    func peers() async throws -> [String] {
        let response = try await HTTPClient.request("GET", host: server.host, port: server.port, path: server.basePath + "peerjs/peers")
        guard response.status == 200, case .array(let ids) = try JSONValue.parse(response.text) else {
            throw HarnessError("GET /peerjs/peers: \(response.status) \(response.text)")
        }
        return ids.compactMap { if case .string(let id) = $0 { id } else { nil } }
    }
}

/// Runs `body` with a fresh database and `count` instances of one cluster; everything stops after.
func withCluster(
    _ count: Int = 2, expiry: Int = 30, extra: [String] = [],
    _ body: (ScratchPostgres, [Instance]) async throws -> Void
) async throws {
    let database = try await ScratchPostgres.start()
    var instances: [Instance] = []
    do {
        for index in 0..<count {
            instances.append(try await Instance.launch(database.flags("i\(index)-\(Unique.token(4))", expiry: expiry) + extra))
        }
        try await body(database, instances)
    } catch {
        for (index, instance) in instances.enumerated() { instance.server.printLog(header: "instance \(index) (\(error))") }
        for instance in instances { await instance.server.stop() }
        await database.remove()
        throw error
    }
    for instance in instances { await instance.server.stop() }
    await database.remove()
}

@Suite("Cluster (PostgreSQL)", .serialized, .enabled(if: ScratchPostgres.available, "Debian's postgresql is not installed (scripts/setup.sh installs it)"))
struct ClusterTests {
    @Test("a client on A and one on B exchange OFFER, ANSWER and CANDIDATE both ways; the directory is cluster-wide")
    func crossInstanceSignalling() async throws {
        try await withCluster { _, instances in
            let (a, b) = (instances[0], instances[1])
            let alice = try await a.register("alice")
            let bob = try await b.register("bob")
            for (type, from, to) in [("OFFER", alice, bob), ("ANSWER", bob, alice), ("CANDIDATE", alice, bob), ("CANDIDATE", bob, alice)] {
                let payload: JSONValue = ["sdp": .string("\(type) from \(from.id)"), "type": "data", "connectionId": "dc_1"]
                try await from.send(type: type, to: to.id, payload: payload)
                let got = try await to.ws.nextJSON(timeout: .seconds(5))
                #expect(got == ["type": .string(type), "src": .string(from.id), "dst": .string(to.id), "payload": payload])
            }
            // /peers lists both instances' ids on each (the directory is announced, so poll briefly).
            for instance in instances {
                var listed: [String] = []
                for _ in 0..<50 {
                    listed = try await instance.peers()
                    if listed.contains(alice.id), listed.contains(bob.id) { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(listed.contains(alice.id) && listed.contains(bob.id), "\(listed)")
            }
            await alice.ws.close()
            await bob.ws.close()
        }
    }

    @Test("an id taken on A is ID-TAKEN on B; with the same token it moves to B and A closes its socket")
    func idTakenAcrossInstances() async throws {
        try await withCluster { _, instances in
            let (a, b) = (instances[0], instances[1])
            let alice = try await a.register("alice")
            let thief = try await b.connect(id: alice.id, token: "another-token")
            #expect(try await thief.nextJSON() == ["type": "ID-TAKEN", "payload": ["msg": "ID is taken"]])
            _ = try await thief.waitForClose()
            // The same client re-attaching through B (a load balancer sent it there): it owns the id now.
            let again = try await b.connect(id: alice.id, token: alice.token)
            #expect(try await again.nextJSON() == ["type": "OPEN"])
            _ = try await alice.ws.waitForClose(timeout: .seconds(5))
            let carol = try await a.register("carol")
            try await carol.send(type: "OFFER", to: alice.id, payload: "to the moved alice")
            #expect(try await again.nextJSON() == ["type": "OFFER", "src": .string(carol.id), "dst": .string(alice.id), "payload": "to the moved alice"])
            await again.close()
            await carol.ws.close()
        }
    }

    @Test("a payload larger than 8 KB crosses (through a relay row), both ways, unchanged")
    func largePayloadCrosses() async throws {
        try await withCluster { _, instances in
            let alice = try await instances[0].register("alice")
            let bob = try await instances[1].register("bob")
            let sdp = String(repeating: "a=candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host generation 0\r\n", count: 300)
            #expect(sdp.utf8.count > 20_000)
            let payload: JSONValue = ["sdp": ["type": "offer", "sdp": .string(sdp)], "type": "media", "connectionId": "mc_1"]
            try await alice.send(type: "OFFER", to: bob.id, payload: payload)
            #expect(try await bob.ws.nextJSON(timeout: .seconds(5)) == ["type": "OFFER", "src": .string(alice.id), "dst": .string(bob.id), "payload": payload])
            try await bob.send(type: "ANSWER", to: alice.id, payload: payload)
            #expect(try await alice.ws.nextJSON(timeout: .seconds(5)) == ["type": "ANSWER", "src": .string(bob.id), "dst": .string(alice.id), "payload": payload])
            await alice.ws.close()
            await bob.ws.close()
        }
    }

    @Test("SIGKILL of a whole instance frees its ids within --cluster-expiry")
    func killedInstanceFreesIDs() async throws {
        let expiry = 3
        try await withCluster(expiry: expiry) { _, instances in
            let (a, b) = (instances[0], instances[1])
            let alice = try await a.register("alice")
            let early = try await b.connect(id: alice.id, token: "new-token")
            #expect(try await early.nextJSON() == ["type": "ID-TAKEN", "payload": ["msg": "ID is taken"]])
            a.server.process.killGroup()  // supervisor, broker and cluster role: nobody releases the row
            let killedAt = ContinuousClock.now
            var opened = false
            // Bounded by the expiry (refreshes every expiry/3) and a margin for a loaded machine.
            while !opened, ContinuousClock.now - killedAt < .seconds(expiry * 2 + 10) {
                let ws = try await b.connect(id: alice.id, token: "new-token")
                let first = try await ws.nextJSON()
                if first == ["type": "OPEN"] {
                    opened = true
                    await ws.close()
                } else {
                    #expect(first == ["type": "ID-TAKEN", "payload": ["msg": "ID is taken"]])
                    await ws.close()
                    try await Task.sleep(for: .milliseconds(250))
                }
            }
            #expect(opened, "the id stayed taken \(ContinuousClock.now - killedAt) after A was killed")
            // Not at once: the row expired (A's last refresh was at most expiry/3 before the kill), it was not released.
            #expect(ContinuousClock.now - killedAt >= .seconds(1), "freed at once: the row was released, not expired")
        }
    }

    @Test("PostgreSQL stops and starts again: nothing crashes, local signalling goes on, new ids get a clear ERROR, then all works again")
    func databaseOutage() async throws {
        try await withCluster { database, instances in
            let (a, b) = (instances[0], instances[1])
            let pids = [a.server.pid, b.server.pid].flatMap { [$0] + ServerProcess.children(of: $0) }
            let alice = try await a.register("alice")
            let carol = try await a.register("carol")
            let bob = try await b.register("bob")
            // A learns of bob before the outage.
            for _ in 0..<50 where !(try await a.peers()).contains(bob.id) { try await Task.sleep(for: .milliseconds(100)) }
            let mark = a.server.logLines.count
            let markB = b.server.logLines.count
            try await database.stop()
            _ = try await a.server.waitForLog(from: mark, timeout: .seconds(20), "peer directory unavailable") {
                $0.contains("peer directory unavailable")
            }
            // Local signalling goes on.
            try await alice.send(type: "OFFER", to: carol.id, payload: "local")
            #expect(try await carol.ws.nextJSON() == ["type": "OFFER", "src": .string(alice.id), "dst": .string(carol.id), "payload": "local"])
            // A peer on another instance: EXPIRE at once.
            try await alice.send(type: "OFFER", to: bob.id, payload: "remote")
            #expect(try await alice.ws.nextJSON() == ["type": "EXPIRE", "src": .string(bob.id), "dst": .string(alice.id)])
            // A new id: refused with a clear ERROR rather than risk a duplicate.
            let newcomer = try await a.connect(id: Unique.id("new"), token: "t")
            #expect(try await newcomer.nextJSON() == ["type": "ERROR", "payload": ["msg": "The peer directory is unavailable, try again later"]])
            await newcomer.close()
            let resumed = a.server.logLines.count
            try await database.resume()
            try await a.waitForDirectory(from: resumed, timeout: .seconds(60))
            _ = try await b.server.waitForLog(from: markB, timeout: .seconds(20), "B: peer directory unavailable") {
                $0.contains("peer directory unavailable")
            }
            try await b.waitForDirectory(from: markB, timeout: .seconds(60))
            // Nothing crashed, nothing registered was dropped, and the cluster works again.
            for pid in pids { #expect(ServerProcess.isAlive(pid), "pid \(pid) died") }
            let late = try await a.register("late")
            var delivered = false
            for _ in 0..<50 where !delivered {
                try await late.send(type: "OFFER", to: bob.id, payload: "after")
                // At most once: a message sent before A hears of bob again waits for him on A.
                let got = try? await bob.ws.nextJSON(timeout: .seconds(1))
                delivered = got == ["type": "OFFER", "src": .string(late.id), "dst": .string(bob.id), "payload": "after"]
            }
            #expect(delivered)
            try await carol.send(type: "ANSWER", to: alice.id, payload: "still here")
            #expect(try await alice.ws.nextJSON() == ["type": "ANSWER", "src": .string(carol.id), "dst": .string(alice.id), "payload": "still here"])
            for peer in [alice, carol, bob, late] { await peer.ws.close() }
        }
    }

    @Test("two instances share one public port with --reuse-port; peers on either reach each other")
    func sharedPort() async throws {
        let database = try await ScratchPostgres.start()
        let first = try await Instance.launch(database.flags("first") + ["--reuse-port"])
        do {
            let second = try await Instance.launch(database.flags("second") + ["--reuse-port", "--port", String(first.server.port)])
            #expect(second.server.port == first.server.port)
            var peers: [Peer] = []
            for index in 0..<16 { peers.append(try await first.register("shared\(index)")) }
            // The kernel spread the connections over both instances (each logs its own; the lines
            // may trail the OPENs a little).
            var served = [0, 0]
            for _ in 0..<50 {
                served = [first, second].map { instance in
                    instance.server.logLines.filter { line in peers.contains { line.contains("Client connected: \($0.id)") } }.count
                }
                if served[0] + served[1] == peers.count { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(served[0] > 0 && served[1] > 0, "connections per instance: \(served)")
            #expect(served[0] + served[1] == peers.count)
            try await peers[0].send(type: "OFFER", to: peers[15].id, payload: "across")
            #expect(try await peers[15].ws.nextJSON(timeout: .seconds(5)) == ["type": "OFFER", "src": .string(peers[0].id), "dst": .string(peers[15].id), "payload": "across"])
            for peer in peers { await peer.ws.close() }
            await second.server.stop()
        } catch {
            first.server.printLog(header: "first (\(error))")
            await first.server.stop()
            await database.remove()
            throw error
        }
        await first.server.stop()
        await database.remove()
    }

    @Test("the cluster role alone is killed: the supervisor starts a new one, the broker claims its ids again, nobody else may take them, new ids work again")
    func clusterRoleRestart() async throws {
        try await withCluster { _, instances in
            let (a, b) = (instances[0], instances[1])
            let alice = try await a.register("alice")
            let started = try await a.server.waitForLog("the cluster role's pid") { $0.contains("cluster role started pid=") }
            let pid = try #require(started.split(separator: "=").last.flatMap { Int32($0) })
            let mark = a.server.logLines.count
            kill(pid, SIGKILL)
            _ = try await a.server.waitForLog(from: mark, timeout: .seconds(10), "a new cluster role") { $0.contains("cluster role started pid=") }
            try await a.waitForDirectory(from: mark, timeout: .seconds(30))
            // The new role dropped the old rows and claimed alice again: still hers.
            let thief = try await b.connect(id: alice.id, token: "another-token")
            #expect(try await thief.nextJSON() == ["type": "ID-TAKEN", "payload": ["msg": "ID is taken"]])
            await thief.close()
            let carol = try await a.register("carol")
            try await alice.send(type: "OFFER", to: carol.id, payload: "still local")
            #expect(try await carol.ws.nextJSON() == ["type": "OFFER", "src": .string(alice.id), "dst": .string(carol.id), "payload": "still local"])
            let bob = try await b.register("bob")
            var delivered = false
            for _ in 0..<50 where !delivered {
                try await bob.send(type: "OFFER", to: alice.id, payload: "across")
                let got = try? await alice.ws.nextJSON(timeout: .seconds(1))
                delivered = got == ["type": "OFFER", "src": .string(bob.id), "dst": .string(alice.id), "payload": "across"]
            }
            #expect(delivered)
            for peer in [alice, carol, bob] { await peer.ws.close() }
        }
    }
}
