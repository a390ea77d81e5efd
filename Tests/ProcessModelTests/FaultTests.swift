import Foundation
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 15 item 8: faults against the real binary, each bounded in time and count, 127.0.0.1 only.
/// Speed is not asserted (DEVELOPERS.md: no speed goals in timed unit tests); where a time matters,
/// the bound is generous ("not stalled behind the flood", "not hanging") and the measured figure is
/// printed. The figures that count are in BENCHMARKS.md ("Signalling under 10,000 stalled
/// connections").
@Suite("Faults", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct FaultTests {
    @Test("F2 EMFILE on accept: the supervisor does not spin, logs once, and serves the waiting client when descriptors are back")
    func acceptFailsWithEMFILE() async throws {
        try await ServerProcess.withServer([]) { server in
            let s = Supervision.endpoint(server)
            #expect(try await s.get("peerjs/id").status == 200)  // the broker holds credit: accepting
            // Every descriptor number below the limit in use: the next accept4 fails with EMFILE.
            let limit = try Self.lowestFreeDescriptor(server.pid)
            let original = try Self.openFilesLimit(of: server.pid)
            try Self.setOpenFilesLimit(of: server.pid, rlimit(rlim_cur: rlim_t(limit), rlim_max: original.rlim_max))
            var restored = false
            defer { if !restored { try? Self.setOpenFilesLimit(of: server.pid, original) } }
            let mark = server.logLines.count
            let waiting = try await RawTCPConnection.connect(port: s.port)  // the kernel accepts it into the backlog
            await waiting.send(Array("GET /peerjs/id HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8))
            let line = try await server.waitForLog(from: mark, "accept on … failed") { $0.contains("accept on") && $0.contains("failed") }
            #expect(line.contains("Too many open files"), "\(line)")
            // The supervisor's CPU time over two seconds of failing accepts.
            let ticks0 = try Self.cpuTicks(server.pid)
            let start = ContinuousClock.now
            try await Task.sleep(for: .seconds(2))  // the measurement window
            let ticks1 = try Self.cpuTicks(server.pid)
            let seconds = Stopwatch.milliseconds(since: start) / 1000
            let share = Double(ticks1 - ticks0) / Double(sysconf(Int32(_SC_CLK_TCK))) / seconds
            print("F2: supervisor CPU while accept fails with EMFILE: \(Self.fmt(share * 100)) % of a core over \(Self.fmt(seconds)) s (limit \(limit))")
            #expect(share < 0.2, "the supervisor busy-loops on EMFILE")
            let failures = server.logLines[mark...].filter { $0.contains("accept on") && $0.contains("failed") }
            #expect(failures.count == 1, "the accept error is logged at most once per 10 s: \(failures)")
            #expect(waiting.received.isEmpty, "the waiting client got an answer while accept was failing")
            try Self.setOpenFilesLimit(of: server.pid, original)
            restored = true
            let served = await waiting.waitForData(timeout: .seconds(5)) { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") }
            let response = String(decoding: waiting.received, as: UTF8.self)
            #expect(served && response.hasPrefix("HTTP/1.1 200"), "the waiting client: \(response.prefix(80))")
            await waiting.close()
        }
    }

    @Test("F3 broker SIGKILLed under 1,000 peers: TCP connects succeed throughout the restart; a reconnecting client gets OPEN")
    func brokerKilledUnderLoad() async throws {
        try await ServerProcess.withServer(["--log-level", "notice"]) { server in
            let s = Supervision.endpoint(server)
            let peers = RawPeers()
            defer { peers.closeAll() }
            try await peers.open(1_000, prefix: "k", endpoint: s)
            #expect(peers.registeredCount == 1_000)
            let old = try await server.waitForBroker()
            let mark = server.logLines.count
            let start = ContinuousClock.now
            kill(old, SIGKILL)
            // Probe the port until the new broker says it is ready, and a few times after.
            var probes = 0
            var refused = 0
            var readyAfter: Double?
            var after = 0
            let deadline = ContinuousClock.now + .seconds(15)
            while after < 20, probes < 5_000, ContinuousClock.now < deadline {
                probes += 1
                if try await !Self.tcpConnects(port: s.port) { refused += 1 }
                if readyAfter == nil {
                    if let broker = server.brokerPID(), broker != old,
                        server.logLines[mark...].contains(where: { $0.contains("broker pid=\(broker) ready") })
                    {
                        readyAfter = Stopwatch.milliseconds(since: start)
                    }
                } else {
                    after += 1
                }
                try await Task.sleep(for: .milliseconds(2))  // pacing of the probes
            }
            print("F3: new broker ready \(readyAfter.map { Self.fmt($0) } ?? "never") ms after SIGKILL; \(probes) TCP probes, \(refused) failed")
            #expect(readyAfter != nil, "no new broker reported ready within 15 s")
            #expect(refused == 0, "the listening socket refused \(refused) of \(probes) connections during the restart")
            let new = try await server.waitForBroker(other: old)
            // The old connections died with the old broker.
            #expect(try await peers.wait(timeout: .seconds(5)) { $0.endedCount == 1_000 }, "\(peers.endedCount) of 1,000 saw their connection end")
            // A client reconnects with its old id: the id died with the old broker, so it is free.
            let again = try await s.connect(id: peers.ids[0], token: "t")
            #expect(try await again.nextJSON(timeout: .seconds(10)) == ["type": "OPEN"])
            await again.close()
            #expect(server.brokerPID() == new)
        }
    }

    @Test("F4 SIGTERM under 1,000 peers, 3 pairs of them relaying: exit 0 within the drain bound, every peer sees a 1001 close")
    func drainUnderLoad() async throws {
        // Bound: the broker gets `drainDeadlineMs` (3000) to close its peers; the supervisor kills it
        // `drainDeadlineMs + 2000` ms after SIGTERM and then exits 0 (Supervisor.checkTimers) — 5 s.
        // Its poll wakes at least once a second, so a hung broker ends by 6 s at the latest; 2 s
        // more for the test process itself to see the exit on a loaded machine.
        let bound: Double = 5_000 + 3_000
        try await ServerProcess.withServer(["--log-level", "notice"]) { server in
            let s = Supervision.endpoint(server)
            let peers = RawPeers()
            defer { peers.closeAll() }
            // 994 + 6 relaying = 1,000 peers, the default --ip_limit for one address.
            try await peers.open(994, prefix: "d", endpoint: s)
            #expect(peers.registeredCount == 994)
            var pairs: [(Peer, Peer)] = []
            for _ in 0..<3 { pairs.append((try await s.register("ra"), try await s.register("rb"))) }
            let relayed = Counter()
            var status: PeerJSTesting.ExitStatus?
            var elapsed = 0.0
            let outcomes = try await withThrowingTaskGroup(of: [UInt16?].self) { group in
                for (a, b) in pairs { group.addTask { await Self.relayUntilClosed(a, b, counter: relayed) } }
                let deadline = ContinuousClock.now + .seconds(10)
                while relayed.value < 60, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
                #expect(relayed.value >= 60, "the pairs did not start relaying")
                let start = ContinuousClock.now
                server.signal(SIGTERM)
                status = await server.waitForExit(timeout: .seconds(10))
                elapsed = Stopwatch.milliseconds(since: start)
                var codes: [UInt16?] = []
                for try await pair in group { codes += pair }
                return codes
            }
            _ = try await peers.wait(timeout: .seconds(5)) { $0.endedCount == 994 }
            let closes = peers.closeCodes
            print("F4: exit \(status.map(String.init(describing:)) ?? "none") \(Self.fmt(elapsed)) ms after SIGTERM (bound \(Self.fmt(bound)) ms); "
                + "\(relayed.value) messages relayed; \(peers.endedCount) raw peers ended, \(closes.count) with a close frame; relaying peers' codes \(outcomes)")
            #expect(status == .exited(0))
            #expect(elapsed < bound)
            #expect(peers.endedCount == 994)
            #expect(closes.allSatisfy { $0 == 1001 }, "close codes other than 1001: \(closes.filter { $0 != 1001 }.prefix(5))")
            #expect(closes.count == 994, "every peer should get its close frame (\(closes.count) did)")
            #expect(outcomes.count == 6 && outcomes.allSatisfy { $0 == 1001 }, "relaying peers: \(outcomes)")
            #expect(server.logLines.contains { $0.contains("drained; exiting") })
        }
    }

    @Test("F5 a full broker (--concurrent_limit 5 --handshake_limit 5): new connections are served or closed, never left hanging")
    func fullBrokerNeverHangs() async throws {
        // The budget is 10 slots. Registered peers hold theirs; connections still in their handshake
        // (stalled ones, and HTTP connections, which stay "in handshake" while kept alive) are
        // evicted oldest first so that one slot stays free. With at most 5 peers registered, half the
        // budget is always evictable: a new connection gets in by evicting. Should every slot ever
        // hold a connection past its handshake, the broker says it is full (a credit of 0) and the
        // supervisor closes new connections at once; a broker that is merely slow leaves them in
        // the backlog.
        try await ServerProcess.withServer(["--concurrent_limit", "5", "--handshake_limit", "5", "--ip_handshake_limit", "0"]) { server in
            let s = Supervision.endpoint(server)
            let broker = try await server.waitForBroker()
            var peers: [Peer] = []
            for _ in 0..<5 { peers.append(try await s.register("full")) }
            let stalled = StalledClients()
            defer { stalled.closeAll() }
            for kind in 0..<5 { try await stalled.open(1, port: s.port, prefix: stalledRequests[kind % stalledRequests.count]) }
            #expect(stalled.descriptors.count == 5)
            // The 5th stalled connection filled the budget: the oldest was closed to keep a slot free.
            #expect(try await stalled.waitUntilClosed(atLeast: 1, timeout: .seconds(5)) >= 1)
            let sixth = try await s.connect(id: Unique.id("full"), token: "t")
            #expect(try await sixth.nextJSON() == ["type": "ERROR", "payload": ["msg": "Server has reached its concurrent user limit"]])
            _ = try await sixth.waitForClose()
            // 30 more clients, 10 at a time, each a keep-alive GET held open until its round ends.
            var served = 0
            var closed = 0
            var hanging = 0
            var slowest = 0.0
            for _ in 0..<3 {
                let outcomes = try await withThrowingTaskGroup(of: (RawTCPConnection, Outcome, Double).self) { group in
                    for _ in 0..<10 { group.addTask { try await Self.getOnce(port: s.port) } }
                    var results: [(RawTCPConnection, Outcome, Double)] = []
                    for try await result in group { results.append(result) }
                    return results
                }
                for (connection, outcome, milliseconds) in outcomes {
                    slowest = max(slowest, milliseconds)
                    switch outcome {
                    case .served: served += 1
                    case .closed: closed += 1
                    case .hanging: hanging += 1
                    }
                    await connection.close()
                }
            }
            let shed = server.logLines.filter { $0.contains("closed") && $0.contains("new connection(s)") }
            print("F5: 30 clients on a full broker: \(served) served, \(closed) closed, \(hanging) hanging; slowest \(Self.fmt(slowest)) ms; "
                + "stalled closed by the server \(stalled.closedByServer()) of 5; supervisor shed lines: \(shed.count)")
            #expect(hanging == 0, "a new connection got neither an answer nor a close within 5 s")
            #expect(served + closed == 30)
            #expect(served > 0, "stalled handshakes should make room for new clients")
            // The registered peers are untouched.
            try await peers[0].send(type: "OFFER", to: peers[1].id, payload: offerPayload)
            #expect(try await peers[1].ws.nextJSON()["src"] == .string(peers[0].id))
            #expect(server.brokerPID() == broker)
            for peer in peers { await peer.ws.close() }
        }
    }

    @Test("F6 peerjs-bench stalled (BENCHMARKS.md) against the real server: every round trip returns, every stalled connection is counted")
    func benchStalledScenario() async throws {
        try await ServerProcess.withServer(["--ip_handshake_limit", "0", "--handshake_limit", "100"]) { server in
            let arguments = ["stalled", "--port", "\(server.port)", "--server-pid", "\(server.pid)", "--stalled", "300",
                             "--stalled-rate", "500", "--duration", "0.5", "--timeout", "30", "--json"]
            let (status, output) = try await ServerProcess.run(arguments, binary: "peerjs-bench", timeout: .seconds(45))
            #expect(status == .exited(0), "peerjs-bench \(arguments.joined(separator: " ")): \(output.suffix(5))")
            let result = try BenchTests.result(output)
            for window in ["baselineLatency", "floodLatency", "heldLatency"] {
                #expect(((result[window] as? [String: Any])?["count"] as? Int ?? 0) > 0, "no round trip in \(window)")
            }
            #expect((result["errors"] as? [String: Int])?.isEmpty == true, "\(result["errors"] ?? "-")")
            #expect((result["failures"] as? [String: Int])?.isEmpty == true, "\(result["failures"] ?? "-")")
            #expect(result["stalledConnectFailures"] as? Int == 0)
            // --handshake_limit 100: the broker closed the oldest of the 300 to keep at most 100 (the
            // POSTs announcing a body are answered 413 at once, and the client closes those).
            let held = result["stalledHeld"] as? Int ?? -1
            let ended = (result["stalledClosedByServer"] as? Int ?? -1) + (result["stalledAnswered"] as? Int ?? -1)
            #expect(held + ended == 300)
            #expect((1...101).contains(held), "stalled connections still open: \(held)")
        }
    }

    // Last in the suite: the heaviest test, it starts once the short suites that run in parallel
    // (some with 1 s deadlines) are mostly done.
    @Test("F1 10,000 stalled connections: the broker lives, every OFFER between two peers arrives, latency stays bounded")
    func signallingUnderStalledFlood() async throws {
        // Without --ip_handshake_limit 0 the per-address limit (128) would refuse nearly all of them
        // at once, a separate behaviour (AdmissionTests); here the budget's eviction has to cope.
        try await ServerProcess.withServer(["--ip_handshake_limit", "0", "--log-level", "notice"]) { server in
            let s = Supervision.endpoint(server)
            let broker = try await server.waitForBroker()
            let a = try await s.register("fa")
            let b = try await s.register("fb")
            let stalled = StalledClients()
            defer { stalled.closeAll() }
            // 1,000 batches of 10 stalled connections, each followed by one OFFER round trip while the
            // server is still taking the batch in: the flood goes at the pace the server sets (a
            // round trip waits behind the hand-offs queued before it), and signalling is measured
            // inside it. (A burst faster than the broker adopts stalls signalling: see BENCHMARKS.md,
            // "Signalling under 10,000 stalled connections".)
            // At most 1,000 connections/s (pacing, not synchronisation): below what the debug build
            // takes with a round trip per 10 (~1,600/s here), and it leaves the other suites running
            // in parallel, some with 1 s deadlines, a share of the two cores.
            let started = ContinuousClock.now
            var during: [Double] = []
            var count = 0
            for batch in 0..<1_000 {
                for index in 0..<10 {
                    count += try await stalled.open(1, port: s.port, prefix: stalledRequests[(batch * 10 + index) % stalledRequests.count])
                }
                during.append(try await Self.roundTrip(a, b, batch))
                try await Task.sleep(until: started + .milliseconds(10 * (batch + 1)), clock: .continuous)
            }
            let floodSeconds = Stopwatch.milliseconds(since: started) / 1000
            // 100 more while the survivors are held.
            var held: [Double] = []
            for number in 1_000..<1_100 { held.append(try await Self.roundTrip(a, b, number)) }
            let closedByServer = stalled.closedByServer()
            let all = during + held
            print("F1: \(count) stalled connections opened in \(Self.fmt(floodSeconds)) s, \(closedByServer) of them seen closed by the server so far; "
                + "\(during.count) OFFER round trips during the flood: \(Self.summary(during)); "
                + "\(held.count) while held: \(Self.summary(held))")
            #expect(count == 10_000, "every stalled connection should have been accepted by the kernel and the supervisor")
            #expect(server.brokerPID() == broker, "the broker was replaced during the flood")
            #expect(!server.logLines.contains { $0.contains("starting a new one") || $0.contains("exited with status") })
            // Every OFFER arrived (roundTrip throws otherwise). Generous, since the other suites run
            // beside this one on two cores (p99 up to 162 ms seen): "not stalled behind the flood",
            // which before the hand-off doorbell meant seconds. The real figure is BENCHMARKS.md's.
            #expect(Self.percentile(all, 0.99) < 2000, "p99 of OFFER round trips: \(Self.summary(all))")
            #expect(server.logLines.contains { $0.contains("closing the oldest unfinished handshakes") })
            await a.ws.close()
            await b.ws.close()
        }
    }

    // MARK: - Helpers

    enum Outcome: Sendable { case served, closed, hanging }

    /// One keep-alive `GET /peerjs/id` on a fresh connection: answered (a response head arrived),
    /// closed without an answer, or hanging (neither within 5 s). The connection is returned open.
    static func getOnce(port: Int) async throws -> (RawTCPConnection, Outcome, Double) {
        let start = ContinuousClock.now
        let connection = try await RawTCPConnection.connect(port: port)
        await connection.send(Array("GET /peerjs/id HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
        let answered = await connection.waitForData(timeout: .seconds(5)) { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") }
        let milliseconds = Stopwatch.milliseconds(since: start)
        if answered { return (connection, String(decoding: connection.received, as: UTF8.self).hasPrefix("HTTP/1.1 200") ? .served : .closed, milliseconds) }
        return (connection, await connection.waitForEOF(timeout: .milliseconds(1)) ? .closed : .hanging, milliseconds)
    }

    /// A sends an OFFER to B, B one back to A; each must arrive with its number. Returns the
    /// milliseconds the two took.
    static func roundTrip(_ a: Peer, _ b: Peer, _ number: Int) async throws -> Double {
        let start = ContinuousClock.now
        for (from, to) in [(a, b), (b, a)] {
            try await from.send(type: "OFFER", to: to.id, payload: ["n": .number(Double(number)), "sdp": "v=0"])
            let got = try await to.ws.nextJSON(timeout: .seconds(10))
            guard got["type"] == "OFFER", got["src"] == .string(from.id), got["payload"]?["n"] == .number(Double(number)) else {
                throw HarnessError("round trip \(number): \(to.id) expected OFFER n=\(number) from \(from.id), got \(got)")
            }
        }
        return Stopwatch.milliseconds(since: start)
    }

    /// Relays OFFERs between a and b, one every 2 ms at most, until the server closes them (bounded:
    /// 100,000 messages, and 10 s per message); returns the close codes both saw (nil: no close frame).
    static func relayUntilClosed(_ a: Peer, _ b: Peer, counter: Counter) async -> [UInt16?] {
        var codes: [Int: UInt16?] = [:]
        var turn = 0
        while codes.isEmpty, turn < 100_000 {
            let (from, to, side) = turn % 2 == 0 ? (a, b, 1) : (b, a, 0)
            turn += 1
            do {
                try await Task.sleep(for: .milliseconds(2))  // pacing: a few hundred messages/s per pair
                try await from.send(type: "OFFER", to: to.id, payload: ["n": .number(Double(turn))])
                if case .close(let code) = try await to.ws.nextFrame(timeout: .seconds(10)) {
                    codes[side] = .some(code)
                } else {
                    counter.increment()
                }
            } catch {
                break  // the sender's connection is closing: its close frame is read below
            }
        }
        for (side, peer) in [(0, a), (1, b)] where codes[side] == nil {
            codes[side] = .some((try? await peer.ws.waitForClose(timeout: .seconds(8)))?.code)
        }
        return [codes[0] ?? nil, codes[1] ?? nil]
    }

    /// Whether a plain TCP connection to 127.0.0.1:`port` is established (within 2 s); closed at once.
    static func tcpConnects(port: Int) async throws -> Bool {
        let probe = StalledClients()
        defer { probe.closeAll() }
        return try await probe.open(1, port: port, prefix: []) == 1
    }

    /// utime + stime of `pid` in clock ticks (fields 14 and 15 of /proc/PID/stat).
    static func cpuTicks(_ pid: Int32) throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        guard let close = stat.lastIndex(of: ")") else { throw HarnessError("unreadable /proc/\(pid)/stat") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")  // fields[0] is field 3
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else {
            throw HarnessError("unreadable /proc/\(pid)/stat: \(stat)")
        }
        return user + system
    }

    /// The lowest descriptor number `pid` has free: with that as its limit, every number below is taken.
    static func lowestFreeDescriptor(_ pid: Int32) throws -> Int {
        let used = Set(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap { Int($0) })
        var number = 0
        while used.contains(number) { number += 1 }
        return number
    }

    /// glibc's prlimit(2) wrapper, which the Glibc module does not export (it needs _GNU_SOURCE).
    typealias Prlimit = @convention(c) (pid_t, Int32, UnsafePointer<rlimit>?, UnsafeMutablePointer<rlimit>?) -> Int32

    static func prlimit(_ pid: Int32, _ resource: Int32, _ new: UnsafePointer<rlimit>?, _ old: UnsafeMutablePointer<rlimit>?) throws -> Int32 {
        guard let symbol = dlsym(nil, "prlimit") else { throw HarnessError("prlimit is not in the C library") }
        return unsafeBitCast(symbol, to: Prlimit.self)(pid, resource, new, old)
    }

    static func openFilesLimit(of pid: Int32) throws -> rlimit {
        var limit = rlimit()
        guard try prlimit(pid, Int32(RLIMIT_NOFILE.rawValue), nil, &limit) == 0 else {
            throw HarnessError("prlimit(\(pid)): \(String(cString: strerror(errno)))")
        }
        return limit
    }

    static func setOpenFilesLimit(of pid: Int32, _ limit: rlimit) throws {
        var limit = limit
        guard try prlimit(pid, Int32(RLIMIT_NOFILE.rawValue), &limit, nil) == 0 else {
            throw HarnessError("prlimit(\(pid), \(limit.rlim_cur)): \(String(cString: strerror(errno)))")
        }
    }

    static func percentile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))]
    }

    static func summary(_ values: [Double]) -> String {
        "p50 \(fmt(percentile(values, 0.5))) ms, p99 \(fmt(percentile(values, 0.99))) ms, max \(fmt(values.max() ?? 0)) ms"
    }

    static func fmt(_ value: Double) -> String { String(format: "%.2f", value) }
}

/// A counter shared between tasks.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    func increment() {
        lock.lock()
        count += 1
        lock.unlock()
    }

    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
}

/// Raw WebSocket peers on plain non-blocking sockets (opened by ``StalledClients``): each sends a
/// complete upgrade request and then only reads, so a thousand cost the test almost nothing.
/// Server frames are parsed from what each socket received (unmasked, RFC 6455 §5.2).
final class RawPeers: @unchecked Sendable {
    private let clients = StalledClients()
    private(set) var ids: [String] = []
    private var received: [[UInt8]] = []
    private var ended: [Bool] = []

    /// Opens `count` peers with ids `prefix-…`, in batches of 100, each batch registered before the
    /// next (the default --ip_handshake_limit, 128, counts unfinished handshakes per address), at
    /// most one batch per 100 ms (pacing: the suites running in parallel keep a share of the cores).
    func open(_ count: Int, prefix: String, endpoint s: Endpoint, timeout: Duration = .seconds(30)) async throws {
        let started = ContinuousClock.now
        let deadline = started + timeout
        var remaining = count
        var batches = 0
        while remaining > 0 {
            try await Task.sleep(until: started + .milliseconds(100 * batches), clock: .continuous)
            batches += 1
            let batch = min(100, remaining)
            remaining -= batch
            for _ in 0..<batch {
                let id = Unique.id(prefix)
                let request = "GET \(s.wsPath)?key=\(s.key)&id=\(id)&token=t HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                guard try await clients.open(1, port: s.port, prefix: Array(request.utf8)) == 1 else {
                    throw HarnessError("could not connect raw peer \(ids.count + 1)")
                }
                ids.append(id)
                received.append([])
                ended.append(false)
            }
            let target = ids.count
            guard try await wait(timeout: deadline - ContinuousClock.now, until: { $0.registeredCount == target }) else {
                throw HarnessError("\(registeredCount) of \(target) raw peers registered within \(timeout)")
            }
        }
    }

    /// Reads what is available on every socket still open (without waiting).
    func pump() {
        let open = clients.descriptors.indices.filter { !ended[$0] }
        guard !open.isEmpty else { return }
        var entries = open.map { pollfd(fd: clients.descriptors[$0], events: Int16(POLLIN), revents: 0) }
        guard poll(&entries, nfds_t(entries.count), 0) > 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 16384)
        for (slot, entry) in zip(open, entries) where entry.revents != 0 {
            for _ in 0..<8 {
                let n = recv(entry.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if n > 0 {
                    if received[slot].count < 65536 { received[slot] += buffer[0..<n] }
                    continue
                }
                if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { ended[slot] = true }
                break
            }
        }
    }

    /// Pumps until `done` holds (true) or `timeout` passes (false).
    func wait(timeout: Duration, until done: (RawPeers) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            pump()
            if done(self) { return true }
            if ContinuousClock.now >= deadline { return false }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    var registeredCount: Int { received.filter { Self.frames($0).texts.contains { $0.contains(#""type":"OPEN""#) } }.count }

    var endedCount: Int { ended.filter { $0 }.count }

    /// The status code of each close frame received (nil: a close frame without one).
    var closeCodes: [UInt16?] { received.compactMap { Self.frames($0).close } }

    func closeAll() { clients.closeAll() }

    /// The text messages and the close frame (its code, nil when it has none) after a 101 response.
    static func frames(_ bytes: [UInt8]) -> (texts: [String], close: UInt16??) {
        guard bytes.starts(with: Array("HTTP/1.1 101".utf8)), bytes.count >= 4,
            let end = (0...(bytes.count - 4)).first(where: {
                bytes[$0] == 0x0D && bytes[$0 + 1] == 0x0A && bytes[$0 + 2] == 0x0D && bytes[$0 + 3] == 0x0A
            })
        else { return ([], nil) }
        var texts: [String] = []
        var at = end + 4
        while bytes.count - at >= 2 {
            let opcode = bytes[at] & 0x0F
            var length = Int(bytes[at + 1] & 0x7F)
            var header = 2
            if length == 126 {
                guard bytes.count - at >= 4 else { break }
                length = Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
                header = 4
            } else if length == 127 {
                guard bytes.count - at >= 10 else { break }
                length = (0..<8).reduce(0) { $0 << 8 | Int(bytes[at + 2 + $1]) }
                header = 10
            }
            guard bytes.count - at >= header + length else { break }
            let payload = Array(bytes[(at + header)..<(at + header + length)])
            if opcode == 0x1 { texts.append(String(decoding: payload, as: UTF8.self)) }
            if opcode == 0x8 { return (texts, .some(payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil)) }
            at += header + length
        }
        return (texts, nil)
    }
}
