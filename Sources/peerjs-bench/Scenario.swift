import Glibc

/// What one run produced; written as JSON with `--json` (absent fields are omitted).
struct RunResult: Codable, Sendable {
    var scenario: String
    var label: String
    var startedAt: String
    var loadAverageBefore: String
    var loadAverageAfter = ""
    var parameters: [String: String] = [:]
    var timedOut = false
    var elapsedSeconds = 0.0
    var clientCPUSeconds = 0.0
    var failures: [String: Int] = [:]

    // connect
    var peers: Int?
    var connected: Int?
    var connectionsPerSecond: Double?
    var openLatency: LatencySummary?
    var droppedWhileHeld: Int?
    var serverBefore: [ProcessSample]?
    var serverHeld: [ProcessSample]?
    /// (RSS while holding − RSS before) ÷ peers, of the broker (or the single server process).
    var rssPerPeerBytes: Double?
    var anonPerPeerBytes: Double?
    /// Server CPU (all its processes, user + system) per connection, and the bench client's own.
    var serverCPUMicrosPerConnection: Double?
    var clientCPUMicrosPerConnection: Double?
    /// The kernel's part of each (system time): what no user-space change on either side saves.
    var serverSystemMicrosPerConnection: Double?
    var clientSystemMicrosPerConnection: Double?

    // relay
    var pairs: Int?
    var messages: UInt64?
    var messagesPerSecond: Double?
    var latency: LatencySummary?
    var errors: [String: Int]?
    var serverCPUSeconds: Double?
    var serverCPUSecondsPerMillion: Double?
    /// Our CPU during the measured window ÷ its length (1.0 = the client's one thread was saturated).
    var clientCPUShare: Double?
    var serverCPUShare: Double?

    // churn
    var sessions: Int?
    var sessionsPerSecond: Double?
    /// Over the measured window: the server's system time, and the client's CPU and system time.
    var serverSystemCPUSeconds: Double?
    var clientCPUMicrosPerSession: Double?
    var clientSystemMicrosPerSession: Double?
    var sessionLatency: LatencySummary?
    var serverAfter: [ProcessSample]?
    var rssGrowthBytes: Int64?
    var rssGrowthPerSessionBytes: Double?
    /// Growth as a share of the RSS sampled after the warm-up (the leak check's 5 % bound).
    var rssGrowthPercent: Double?

    // stalled: round trips before, while and after the stalled connections are opened
    var baselineLatency: LatencySummary?
    var floodLatency: LatencySummary?
    var heldLatency: LatencySummary?
    var floodSeconds: Double?
    /// Stalled connections still open (from the client's side) at the end, closed by the server
    /// without an answer, and never established.
    var stalledHeld: Int?
    var stalledClosedByServer: Int?
    /// Answered with an HTTP error (e.g. 413 to the POST announcing a body) and then closed by the client.
    var stalledAnswered: Int?
    var stalledConnectFailures: Int?
}

/// The shared machinery of a scenario: the loop, the connector, the server's processes, the
/// overall deadline and the orderly teardown of whatever connections are left.
class ScenarioBase: PeerEvents {
    let loop: ClientLoop
    let connector: Connector
    let server: ServerProcesses
    let epoch = nowNanos()
    let prefix: String
    var result: RunResult
    private var completion: ((RunResult) -> Void)?
    private var finished = false
    private var deadline: ClientLoop.Timer?
    private let timeout: Double
    private var startCPU = selfCPUSeconds()
    private var startNanos = nowNanos()
    var live: [Int: PeerConnection] = [:]

    init(name: String, loop: ClientLoop, options: ClientSettings) throws {
        self.loop = loop
        connector = try Connector(loop: loop, options: options)
        server = ServerProcesses(root: options.serverPID)
        // Ids unique per run, so a server still cleaning up an earlier run never answers ID-TAKEN.
        prefix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        result = RunResult(scenario: name, label: options.label, startedAt: utcNow(), loadAverageBefore: Proc.loadAverage())
        timeout = options.timeout
    }

    /// Starts the run; `completion` gets the result, on the loop.
    func run(_ completion: @escaping (RunResult) -> Void) {
        self.completion = completion
        startCPU = selfCPUSeconds()
        startNanos = nowNanos()
        deadline = loop.schedule(after: timeout) { [unowned self] in
            result.timedOut = true
            timedOut()
        }
        start()
    }

    func start() {}

    /// Called on the overall timeout: the default tears down and reports what was measured.
    func timedOut() {
        fail("timeout")
        teardown()
    }

    var stamp: UInt64 { nowNanos() &- epoch }

    func fail(_ kind: String) {
        result.failures[kind, default: 0] += 1
    }

    /// A short failure category (connection errors carry addresses and ports).
    func category(_ reason: String) -> String {
        if reason.hasPrefix("connect:") {
            if reason.contains("refused") { return "connect: refused" }
            if reason.contains("imeout") || reason.contains("imed out") { return "connect: timeout" }
            if reason.contains("not available") || reason.contains("EADDRNOTAVAIL") { return "connect: no local port" }
            if reason.contains("descriptors") || reason.contains("EMFILE") || reason.contains("Too many open files") {
                return "connect: out of descriptors"
            }
            return String(reason.prefix(60))
        }
        return String(reason.prefix(80))
    }

    func schedule(after seconds: Double, _ body: @escaping (ScenarioBase) -> Void) {
        loop.schedule(after: seconds) { [unowned self] in body(self) }
    }

    /// Sends a close frame on every live connection, waits up to 3 s for the server to close
    /// them, aborts the rest, then completes.
    func teardown() {
        guard !finished else { return }
        for peer in live.values {
            peer.state = .closing
            peer.sendClose()
        }
        waitForLive(until: nowNanos() + 3_000_000_000)
    }

    private func waitForLive(until: UInt64) {
        if live.isEmpty || nowNanos() > until {
            for peer in live.values { peer.abort() }
            schedule(after: live.isEmpty ? 0 : 0.2) { $0.finish() }
            return
        }
        schedule(after: 0.05) { $0.waitForLive(until: until) }
    }

    func finish() {
        guard !finished else { return }
        finished = true
        deadline?.cancel()
        result.elapsedSeconds = Double(nowNanos() - startNanos) / 1e9
        result.clientCPUSeconds = selfCPUSeconds() - startCPU
        result.loadAverageAfter = Proc.loadAverage()
        completion?(result)
        completion = nil
    }

    // MARK: PeerEvents (subclasses override)

    func opened(_ peer: PeerConnection) {}
    func received(_ peer: PeerConnection, _ message: UnsafeRawBufferPointer) {}
    func failed(_ peer: PeerConnection, _ reason: String) {
        fail(category(reason))
        if !peer.isConnected { live[peer.index] = nil }
    }
    func closed(_ peer: PeerConnection) {
        live[peer.index] = nil
    }
}

/// The wall-clock time as `YYYY-MM-DDTHH:MM:SSZ`.
func utcNow() -> String {
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
}
