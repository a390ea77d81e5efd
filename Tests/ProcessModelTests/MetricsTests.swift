import Foundation
import Glibc
import PeerJSTesting
import Testing

/// `--metrics-port` (issue 19): the supervisor serves the Prometheus text format on its own
/// listener, from its own series and the broker's `metrics` frames. The broker sends every
/// second, so each check polls the endpoint until the value moves (bounded).
@Suite(
    "Metrics endpoint, --metrics-port",
    .serialized,
    .disabled(if: ServerFixture.isExternal, needsOwnServer),
    .peerServer("--metrics-port", "0", "--takeover-timeout", "0")
)
struct Metrics {
    /// The samples of one scrape, by series (name and labels as printed).
    static func scrape(_ port: Int, timeout: Duration = .seconds(5)) async throws -> [String: Double] {
        let response = try await HTTPClient.request(port: port, path: "/metrics", timeout: timeout)
        guard response.status == 200 else { throw HarnessError("GET /metrics: \(response.status)") }
        var samples: [String: Double] = [:]
        for line in response.text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
        return samples
    }

    /// Scrapes until `condition` holds (bounded: the broker sends every second).
    static func waitFor(_ port: Int, _ what: String, _ condition: ([String: Double]) -> Bool) async throws -> [String: Double] {
        let deadline = ContinuousClock.now + .seconds(15)
        while true {
            let samples = try await scrape(port)
            if condition(samples) { return samples }
            if ContinuousClock.now >= deadline { throw HarnessError("no scrape with \(what) within 15 s; last: \(samples)") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test("the series move as peers come and go: peers per key, relayed messages, latencies, memory; anything but GET /metrics is 404")
    func valuesMove() async throws {
        let s = try Endpoint.current()
        let server = try #require(s.server)
        let port = try await server.listenerPort("metrics")
        let before = try await Self.waitFor(port, "the broker's series") { $0[#"peerjs_peers{key="peerjs"}"#] != nil }
        #expect((before[#"peerjs_resident_memory_bytes{process="supervisor"}"#] ?? 0) > 1_000_000)
        #expect((before[#"peerjs_resident_memory_bytes{process="broker"}"#] ?? 0) > 1_000_000)
        let peersBefore = before[#"peerjs_peers{key="peerjs"}"#] ?? -1
        let offersBefore = before[#"peerjs_messages_relayed_total{type="offer"}"#] ?? -1
        let registeredBefore = before["peerjs_registration_seconds_count"] ?? -1

        let a = try await s.register("ma")
        let b = try await s.register("mb")
        try await a.send(type: "OFFER", to: b.id, payload: ["sdp": "x"])
        _ = try await b.ws.nextJSON()
        let during = try await Self.waitFor(port, "two more peers and an offer") {
            $0[#"peerjs_peers{key="peerjs"}"#] == peersBefore + 2 && $0[#"peerjs_messages_relayed_total{type="offer"}"#] == offersBefore + 1
        }
        #expect(during["peerjs_registration_seconds_count"] == registeredBefore + 2)
        #expect((during["peerjs_handoff_seconds_count"] ?? 0) >= 2)
        #expect(during[#"peerjs_restarts_total{role="broker"}"#] == 0)

        await a.ws.close()
        await b.ws.close()
        _ = try await Self.waitFor(port, "the two peers gone") { $0[#"peerjs_peers{key="peerjs"}"#] == peersBefore }

        let other = try await HTTPClient.request(port: port, path: "/")
        #expect(other.status == 404)
    }

    @Test("a client that sends no request is closed at the deadline; a request head past 8 KiB gets 431")
    func hostileClients() async throws {
        let s = try Endpoint.current()
        let server = try #require(s.server)
        let port = try await server.listenerPort("metrics")
        let huge = try await HTTPClient.request(port: port, path: "/metrics", headers: [("X-Pad", String(repeating: "a", count: 9000))])
        #expect(huge.status == 431)
        // Sixteen silent clients fill the endpoint; a scrape still gets through after their deadline,
        // which is at least 5 s after `start` (each was accepted after it).
        let start = Stopwatch.now
        var silent: [RawTCPConnection] = []
        for _ in 0..<16 { silent.append(try await RawTCPConnection.connect(port: port)) }
        // It waits in the backlog until the first silent one is closed at the 5 s deadline.
        let samples = try await Self.scrape(port, timeout: .seconds(30))
        #expect(samples["peerjs_handshakes"] != nil)
        #expect(Stopwatch.milliseconds(since: start) >= 4900, "answered while 16 silent clients held every slot")
        for connection in silent { await connection.close() }
    }
}

/// A broker restart, on a server of its own (the shared fixture counts a restart as a crash).
@Suite("Metrics endpoint, restarts", .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct MetricsRestarts {
    @Test("a broker restart is counted, and the new broker's series come back")
    func restartCounted() async throws {
        let server = try await ServerProcess.launch(["--metrics-port", "0"])
        defer { Task { await server.stop() } }
        let port = try await server.listenerPort("metrics")
        let broker = try await server.waitForBroker()
        _ = try await Metrics.waitFor(port, "the broker's series") { $0[#"peerjs_restarts_total{role="broker"}"#] == 0 && $0["peerjs_handshakes"] != nil }
        kill(broker, SIGKILL)
        let replacement = try await server.waitForBroker(other: broker)
        #expect(replacement != broker)
        let after = try await Metrics.waitFor(port, "the restart") { $0[#"peerjs_restarts_total{role="broker"}"#] == 1 }
        #expect((after[#"peerjs_resident_memory_bytes{process="broker"}"#] ?? 0) > 0)
    }
}
