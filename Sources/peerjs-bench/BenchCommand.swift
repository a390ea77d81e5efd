import ArgumentParser
import Foundation
import Glibc

@main
struct PeerJSBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peerjs-bench",
        abstract: "Load generator for PeerJS signalling servers, and a trivial reference relay.",
        discussion: """
            One process, one thread (the clients on raw epoll; the trivial relay on SwiftNIO), 127.0.0.x only. Every run is bounded by \
            --duration/--count and an overall --timeout. scripts/bench.sh runs the whole comparison.
            """,
        subcommands: [Connect.self, Relay.self, Churn.self, Stalled.self, TrivialRelay.self, Report.self]
    )
}

/// Options every client scenario takes.
struct ClientOptions: ParsableArguments {
    @Option(help: "Server address (127.0.0.x only).")
    var host = "127.0.0.1"

    @Option(help: "Server port.")
    var port: Int

    @Option(help: "Server mount path.")
    var path = "/"

    @Option(name: .customLong("peer-port"),
            help: "Another instance's port (same host): every second peer (the partner of a relay pair) connects there, so relayed messages cross between instances (--cluster).")
    var peerPort: Int?

    @Option(help: "The API key.")
    var key = "peerjs"

    @Option(name: .customLong("source-addresses"),
            help: ArgumentHelp("""
                Bind client sockets round-robin to 127.0.0.1 … 127.0.0.N. 0 (default): one per 10,000 \
                connections — past ~14k connections from one address Linux's connect() spends most of \
                its time searching for a free even port, and past ~28k there is none.
                """))
    var sourceAddresses = 0

    @Option(help: "Suffix for the scenario name in the output (e.g. 19k → connect@19k), to keep variants apart in reports.")
    var tag: String?

    @Option(name: .customLong("server-pid"),
            help: "The server's pid (for ours: the supervisor; its children, the broker, are found in /proc) for RSS and CPU.")
    var serverPID: Int32?

    @Option(help: "A name for the server under test, carried into the output.")
    var label = "server"

    @Option(help: "Overall time limit in seconds; the run stops, reports what it has and exits 2.")
    var timeout: Double = 120

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Option(help: "Sign each peer's token as an HS256 JWT (sub = its id, exp in an hour) with the secret in this file, for a server run with --auth-jwt-key (the auth helper checks every registration).")
    var jwtSecretFile: String?

    /// A plain copy that can cross into the event loop.
    var settings: ClientSettings {
        ClientSettings(host: host, port: port, peerPort: peerPort, path: path, key: key, sourceAddresses: sourceAddresses,
                       serverPID: serverPID, label: label, timeout: timeout, json: json, tag: tag,
                       jwtSecret: jwtSecretFile.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }.map {
                           Array($0.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
                       })
    }

    func validate() throws {
        var address = in_addr()
        guard host.hasPrefix("127."), inet_pton(AF_INET, host, &address) == 1 else {
            throw ValidationError("--host must be a 127.0.0.x address")
        }
        guard (1...65535).contains(port) else { throw ValidationError("--port must be 1…65535") }
        if let peerPort, !(1...65535).contains(peerPort) { throw ValidationError("--peer-port must be 1…65535") }
        guard (0...254).contains(sourceAddresses) else { throw ValidationError("--source-addresses must be 0…254") }
        guard timeout > 0 && timeout <= 3600 else { throw ValidationError("--timeout must be in (0, 3600] seconds") }
        if let serverPID, Proc.memory(serverPID) == nil {
            throw ValidationError("--server-pid \(serverPID): no such process")
        }
        if let jwtSecretFile, (try? String(contentsOfFile: jwtSecretFile, encoding: .utf8)) == nil {
            throw ValidationError("cannot read --jwt-secret-file \(jwtSecretFile)")
        }
    }
}

struct ClientSettings: Sendable {
    var host: String
    var port: Int
    var peerPort: Int?
    var path: String
    var key: String
    var sourceAddresses: Int
    var serverPID: Int32?
    var label: String
    var timeout: Double
    var json: Bool
    var tag: String?
    var jwtSecret: [UInt8]?
}

/// Runs a scenario on a fresh client loop on this thread and prints its result.
func runScenario(
    _ settings: ClientSettings, connections: Int,
    _ make: (ClientLoop, ClientSettings) throws -> ScenarioBase
) throws {
    var options = settings
    if options.sourceAddresses == 0 { options.sourceAddresses = max(1, (connections + 9_999) / 10_000) }
    guard connections <= 28_000 * options.sourceAddresses else {
        throw ValidationError("\(connections) connections from \(options.sourceAddresses) source address(es): use --source-addresses \(connections / 10_000 + 1)")
    }
    let limit = raiseDescriptorLimit()
    guard connections + 64 <= limit else {
        throw ValidationError(
            "\(connections) connections need \(connections + 64) descriptors; this process may have \(limit) (ulimit -Hn). Run several processes.")
    }
    let loop = try ClientLoop(descriptorLimit: limit)
    let scenario = try make(loop, options)
    var outcome: RunResult?
    scenario.run { result in
        outcome = result
        loop.stop()
    }
    loop.run()
    guard var result = outcome else { throw ExitCode(2) }
    if let tag = options.tag { result.scenario += "@" + tag }
    if options.json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(result), as: UTF8.self))
    } else {
        print(describe(result))
    }
    if result.timedOut { throw ExitCode(2) }
}

struct Connect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "N peers connect, C at a time: connections/s, time to OPEN, failures; then held: server RSS per peer.")

    @OptionGroup var options: ClientOptions

    @Option(name: [.customShort("n"), .customLong("count")], help: "Peers to connect.")
    var count = 5000

    @Option(name: [.short, .customLong("concurrency")], help: "Handshakes in flight at once.")
    var concurrency = 256

    @Option(help: "Seconds to hold the peers open before sampling the server's memory.")
    var hold: Double = 2

    func validate() throws {
        guard count > 0 && count <= 1_000_000 else { throw ValidationError("--count must be 1…1000000") }
        guard concurrency > 0 else { throw ValidationError("--concurrency must be positive") }
        guard hold >= 0 && hold <= 600 else { throw ValidationError("--hold must be 0…600") }
    }

    func run() throws {
        let (options, count, concurrency, hold) = (self.options.settings, self.count, self.concurrency, self.hold)
        try runScenario(options, connections: count) { loop, options in
            try ConnectScenario(loop: loop, options: options, count: count, concurrency: concurrency, hold: hold)
        }
    }
}

struct Relay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "P pairs ping-pong ~1 KiB OFFER/ANSWER for D seconds: messages/s, one-way latency, server CPU per message.")

    @OptionGroup var options: ClientOptions

    @Option(name: [.short, .customLong("pairs")], help: "Peer pairs.")
    var pairs = 64

    @Option(name: [.short, .customLong("inflight")], help: "Messages in flight per pair.")
    var inflight = 4

    @Option(name: [.short, .customLong("duration")], help: "Measured seconds.")
    var duration: Double = 10

    @Option(help: "Seconds of traffic before measuring.")
    var warmup: Double = 2

    @Option(help: "Total messages/s to send (token bucket); 0: as fast as the server answers.")
    var rate: Double = 0

    @Option(name: [.short, .customLong("concurrency")], help: "Handshakes in flight while connecting.")
    var concurrency = 128

    func validate() throws {
        guard pairs > 0 && pairs <= 9_000 else { throw ValidationError("--pairs must be 1…9000") }
        guard inflight > 0 && inflight <= 1024 else { throw ValidationError("--inflight must be 1…1024") }
        guard duration > 0 && duration <= 900, warmup >= 0 && warmup <= 60 else {
            throw ValidationError("--duration must be in (0, 900] and --warmup in [0, 60]")
        }
        guard rate >= 0 else { throw ValidationError("--rate must not be negative") }
    }

    func run() throws {
        let (options, pairs, inflight, duration, warmup, rate, concurrency) =
            (self.options.settings, self.pairs, self.inflight, self.duration, self.warmup, self.rate, self.concurrency)
        try runScenario(options, connections: 2 * pairs) { loop, options in
            try RelayScenario(loop: loop, options: options, pairs: pairs, inflight: inflight, duration: duration,
                              warmup: warmup, rate: rate, concurrency: concurrency)
        }
    }
}

struct Churn: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect, signal, disconnect in a loop: sessions/s, and server RSS after vs before (leak check).")

    @OptionGroup var options: ClientOptions

    @Option(name: [.short, .customLong("concurrency")], help: "Sessions in flight at once.")
    var concurrency = 64

    @Option(name: [.short, .customLong("duration")], help: "Measured seconds.")
    var duration: Double = 10

    @Option(name: [.customLong("count")], help: "Stop the measured window after this many sessions.")
    var count: Int?

    @Option(help: "Seconds of churn before the first memory sample.")
    var warmup: Double = 2

    @Option(help: "End the warm-up after this many sessions instead of --warmup seconds (the leak check: RSS after 100,000 sessions vs after --count more).")
    var warmupSessions: Int?

    @Option(help: "Long-lived peers that answer the sessions' OFFERs.")
    var echoes = 16

    func validate() throws {
        guard concurrency > 0 && concurrency <= 4096 else { throw ValidationError("--concurrency must be 1…4096") }
        guard echoes > 0 && echoes <= 1024 else { throw ValidationError("--echoes must be 1…1024") }
        guard duration > 0 && duration <= 900, warmup >= 0 && warmup <= 60 else {
            throw ValidationError("--duration must be in (0, 900] and --warmup in [0, 60]")
        }
        if let warmupSessions, warmupSessions <= 0 { throw ValidationError("--warmup-sessions must be positive") }
        if let count, count <= 0 { throw ValidationError("--count must be positive") }
    }

    func run() throws {
        let (options, concurrency, duration, count, warmup, echoes, warmupSessions) =
            (self.options.settings, self.concurrency, self.duration, self.count, self.warmup, self.echoes, self.warmupSessions)
        try runScenario(options, connections: concurrency + echoes) { loop, options in
            try ChurnScenario(loop: loop, options: options, echoes: echoes, concurrency: concurrency,
                              duration: duration, warmup: warmup, warmupSessions: warmupSessions, count: count)
        }
    }
}

struct Stalled: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Two peers bounce an OFFER while N stalled connections are opened and held: round-trip time before, during and after.")

    @OptionGroup var options: ClientOptions

    @Option(help: "Stalled connections to open (half a request each, then silence).")
    var stalled = 10_000

    @Option(name: .customLong("stalled-rate"), help: "Stalled connections opened per second.")
    var stalledRate: Double = 5_000

    @Option(name: [.short, .customLong("duration")], help: "Seconds of round trips before the flood, and again while it is held.")
    var duration: Double = 5

    @Option(help: "Milliseconds between one round trip's end and the next OFFER.")
    var interval: Double = 5

    @Flag(help: "Replace every stalled connection the server closes, at once.")
    var refill = false

    func validate() throws {
        guard stalled >= 0 && stalled <= 100_000 else { throw ValidationError("--stalled must be 0…100000") }
        guard stalledRate > 0 else { throw ValidationError("--stalled-rate must be positive") }
        guard duration > 0 && duration <= 600 else { throw ValidationError("--duration must be in (0, 600]") }
        guard interval >= 0 && interval <= 10_000 else { throw ValidationError("--interval must be 0…10000 ms") }
    }

    func run() throws {
        let (options, stalled, rate, duration, interval, refill) =
            (self.options.settings, self.stalled, self.stalledRate, self.duration, self.interval, self.refill)
        try runScenario(options, connections: stalled + 2) { loop, options in
            try StalledScenario(loop: loop, options: options, stalled: stalled, rate: rate, duration: duration,
                                interval: interval, refill: refill)
        }
    }
}

// MARK: Text output

func bytesText(_ value: Double) -> String {
    abs(value) >= 10 * 1024 * 1024 ? "\(fmt(value / 1048576, 1)) MiB" : abs(value) >= 10 * 1024 ? "\(fmt(value / 1024, 1)) KiB" : "\(fmt(value, 0)) B"
}

func processesText(_ samples: [ProcessSample]?) -> String {
    (samples ?? []).map { "\($0.role)[\($0.pid)] rss \(bytesText(Double($0.rssBytes))) cpu \(fmt($0.cpuSeconds, 2)) s" }
        .joined(separator: ", ")
}

func describe(_ r: RunResult) -> String {
    var lines = ["\(r.scenario) against \(r.label) (\(r.parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))"]
    lines.append("  started \(r.startedAt), load average \(r.loadAverageBefore) → \(r.loadAverageAfter), \(fmt(r.elapsedSeconds, 1)) s, client CPU \(fmt(r.clientCPUSeconds, 2)) s\(r.timedOut ? ", TIMED OUT" : "")")
    if let cps = r.connectionsPerSecond {
        lines.append("  connected \(r.connected ?? 0)/\(r.peers ?? 0): \(fmt(cps, 0)) connections/s")
    }
    if let latency = r.openLatency { lines.append("  time to OPEN: \(latency.text)") }
    if let held = r.serverHeld {
        lines.append("  server before: \(processesText(r.serverBefore))")
        lines.append("  server held:   \(processesText(held))")
    }
    if let perPeer = r.rssPerPeerBytes {
        lines.append("  RSS per peer (\(r.serverHeld?.primary?.role ?? "?")): \(bytesText(perPeer)) (anonymous: \(bytesText(r.anonPerPeerBytes ?? 0))); dropped while held: \(r.droppedWhileHeld ?? 0)")
        if let server = r.serverCPUMicrosPerConnection, let client = r.clientCPUMicrosPerConnection {
            lines.append("  CPU per connection: server \(fmt(server, 0)) µs (all its processes; \(fmt(r.serverSystemMicrosPerConnection ?? 0, 0)) system), bench client \(fmt(client, 0)) µs (\(fmt(r.clientSystemMicrosPerConnection ?? 0, 0)) system)")
        }
    }
    if let mps = r.messagesPerSecond {
        lines.append("  forwarded \(r.messages ?? 0) messages: \(fmt(mps, 0)) messages/s")
    }
    if let latency = r.latency { lines.append("  one-way latency: \(latency.text)") }
    if let errors = r.errors { lines.append("  errors: \(errors.isEmpty ? "none" : errors.description)") }
    if let perMillion = r.serverCPUSecondsPerMillion {
        lines.append("  server CPU: \(fmt(r.serverCPUSeconds ?? 0, 2)) s (\(fmt((r.serverCPUShare ?? 0) * 100, 0)) % of a core) = \(fmt(perMillion, 2)) s per million messages")
    }
    if let share = r.clientCPUShare { lines.append("  client CPU: \(fmt(share * 100, 0)) % of a core") }
    if let sps = r.sessionsPerSecond {
        lines.append("  sessions: \(r.sessions ?? 0), \(fmt(sps, 0)) sessions/s")
        if let n = r.sessions, n > 0, let server = r.serverCPUSeconds, let client = r.clientCPUMicrosPerSession {
            lines.append("  CPU per session: server \(fmt(server / Double(n) * 1e6, 0)) µs (\(fmt((r.serverSystemCPUSeconds ?? 0) / Double(n) * 1e6, 0)) system), bench client \(fmt(client, 0)) µs (\(fmt(r.clientSystemMicrosPerSession ?? 0, 0)) system)")
        }
    }
    if let latency = r.sessionLatency { lines.append("  session time: \(latency.text)") }
    if let growth = r.rssGrowthBytes {
        lines.append("  server before: \(processesText(r.serverBefore))")
        lines.append("  server after:  \(processesText(r.serverAfter))")
        lines.append("  RSS growth (\(r.serverAfter?.primary?.role ?? "?")): \(bytesText(Double(growth))) = \(fmt(r.rssGrowthPerSessionBytes ?? 0, 1)) B per session = \(fmt(r.rssGrowthPercent ?? 0, 2)) % of the settled RSS")
    }
    if let baseline = r.baselineLatency {
        lines.append("  round trip before the flood: \(baseline.text)")
        lines.append("  while opening (\(fmt(r.floodSeconds ?? 0, 1)) s): \(r.floodLatency?.text ?? "-")")
        lines.append("  while held: \(r.heldLatency?.text ?? "-")")
        lines.append("  stalled: \(r.stalledHeld ?? 0) still open at the end, \(r.stalledClosedByServer ?? 0) closed by the server, \(r.stalledAnswered ?? 0) answered (HTTP error) and closed, \(r.stalledConnectFailures ?? 0) never established")
    }
    lines.append("  failures: \(r.failures.isEmpty ? "none" : r.failures.description)")
    return lines.joined(separator: "\n")
}
