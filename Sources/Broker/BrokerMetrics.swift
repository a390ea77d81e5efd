import Glibc
import IPC
import NIOCore
import PeerProtocol
import Prometheus

/// What the broker counts itself, beyond the engine (``EngineCounters``): plain integers on the
/// loop, read when the metrics are exported.
struct BrokerCounters {
    /// Refusals at `--ip_limit` (WebSocket connections per address) and `--ip_handshake_limit`.
    var addressLimitHits = 0, addressHandshakeLimitHits = 0
    /// Connections closed at `--output_limit`.
    var outputLimitHits = 0
}

/// The broker's series for `--metrics-port`, kept in a swift-prometheus registry: the counters
/// of the hot path stay plain integers (``EngineCounters``, ``BrokerCounters``) and move into
/// the registry only when ``export(engine:counters:handshakes:queued:peers:)`` runs, once per
/// `metricsIntervalMs`; the two latency histograms are recorded as they happen (once per
/// connection). The text goes to the supervisor in a `metrics` frame.
final class BrokerMetrics {
    let registry = PrometheusCollectorRegistry()
    private var exported = Snapshot()
    private let handoff: DurationHistogram
    private let registration: DurationHistogram
    /// /proc/self/statm, opened before the sandbox (which allows no open, and whose chroot has no
    /// /proc) and re-read with pread from offset 0; -1 when it could not be opened.
    private let statm: Int32
    /// The keys whose `peerjs_peers` gauge was set, so a key a reload removed is set to 0.
    private var exportedKeys: Set<String> = []

    /// The latency buckets: 100 µs to 10 s.
    static let buckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
    ]

    /// The counter values already moved into the registry.
    private struct Snapshot {
        var engine = EngineCounters()
        var broker = BrokerCounters()
    }

    init() {
        statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        handoff = registry.makeDurationHistogram(
            descriptor: Self.name("handoff", "seconds", "From the supervisor's accept to the broker taking the connection."),
            buckets: Self.buckets)
        registration = registry.makeDurationHistogram(
            descriptor: Self.name("registration", "seconds", "From the WebSocket upgrade request to OPEN (auth, directory and takeover waits included)."),
            buckets: Self.buckets)
    }

    deinit {
        if statm >= 0 { close(statm) }
    }

    /// This process's resident memory in bytes (the second field of statm); 0 when unknown.
    var residentBytes: UInt64 {
        guard statm >= 0 else { return 0 }
        var buffer = [UInt8](repeating: 0, count: 128)
        let count = pread(statm, &buffer, buffer.count, 0)
        guard count > 0 else { return 0 }
        return MetricsText.residentBytes(statm: buffer.prefix(count)) ?? 0
    }

    static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "peerjs", metricName: metric, unitName: unit, helpText: help)
    }

    /// A hand-off accepted by the supervisor at `acceptedAtNs` (CLOCK_MONOTONIC) is taken now.
    func handedOff(acceptedAtNs: UInt64) {
        let now = NIODeadline.now().uptimeNanoseconds
        guard acceptedAtNs > 0, now >= acceptedAtNs else { return }
        handoff.recordNanoseconds(Int64(now - acceptedAtNs))
    }

    /// A registration got OPEN `nanoseconds` after its upgrade request.
    func registered(after nanoseconds: Int64) {
        registration.recordNanoseconds(max(0, nanoseconds))
    }

    /// Moves the counters into the registry, sets the gauges and returns the exposition.
    func export(engine: EngineCounters, counters: BrokerCounters, handshakes: Int, queued: (messages: Int, bytes: Int), peers: [(key: String, count: Int)]) -> String {
        let old = exported
        func add(_ metric: String, _ help: String, _ labels: [(String, String)], _ now: Int, _ before: Int) {
            let counter = registry.makeCounter(descriptor: Self.name(metric, "total", help), labels: labels)
            if now > before { counter.increment(by: Int64(now - before)) }
        }
        let relayed = "Messages accepted for relay (delivered, forwarded or queued), by type."
        add("messages_relayed", relayed, [("type", "offer")], engine.offers, old.engine.offers)
        add("messages_relayed", relayed, [("type", "answer")], engine.answers, old.engine.answers)
        add("messages_relayed", relayed, [("type", "candidate")], engine.candidates, old.engine.candidates)
        add("messages_relayed", relayed, [("type", "leave")], engine.leaves, old.engine.leaves)
        add("messages_relayed", relayed, [("type", "expire")], engine.expires, old.engine.expires)
        add("offline_expired", "EXPIREs sent for messages to an offline id (expired, or its queue was full).", [],
            engine.expiredMessages, old.engine.expiredMessages)
        let auth = "Answers of the auth helper (timeout: none in --auth-timeout; failed: no helper or a lost channel)."
        add("auth_answers", auth, [("answer", "allow")], engine.authAllow, old.engine.authAllow)
        add("auth_answers", auth, [("answer", "deny")], engine.authDeny, old.engine.authDeny)
        add("auth_answers", auth, [("answer", "timeout")], engine.authTimeout, old.engine.authTimeout)
        add("auth_answers", auth, [("answer", "failed")], engine.authFailed, old.engine.authFailed)
        let limits = "Connections or registrations refused or closed at a limit."
        add("limit_hits", limits, [("limit", "concurrent")], engine.concurrentLimitHits, old.engine.concurrentLimitHits)
        add("limit_hits", limits, [("limit", "ip")], counters.addressLimitHits, old.broker.addressLimitHits)
        add("limit_hits", limits, [("limit", "ip_handshake")], counters.addressHandshakeLimitHits, old.broker.addressHandshakeLimitHits)
        add("limit_hits", limits, [("limit", "output")], counters.outputLimitHits, old.broker.outputLimitHits)
        let takeovers = "Claims of a registered id by another token (--takeover-timeout): the holder was closed, or it answered."
        add("takeovers", takeovers, [("outcome", "taken_over")], engine.takenOver, old.engine.takenOver)
        add("takeovers", takeovers, [("outcome", "refused")], engine.takeoverRefused, old.engine.takeoverRefused)
        exported = Snapshot(engine: engine, broker: counters)

        let peersName = Self.name("peers", "", "Peers registered, per key (realm).")
        for (key, count) in peers {
            registry.makeGauge(descriptor: peersName, labels: [("key", key)]).set(Int64(count))
        }
        let keys = Set(peers.map(\.key))
        for gone in exportedKeys.subtracting(keys) {
            registry.makeGauge(descriptor: peersName, labels: [("key", gone)]).set(Int64(0))
        }
        exportedKeys.formUnion(keys)
        registry.makeGauge(descriptor: Self.name("handshakes", "", "Connections in their handshake (TLS, HTTP request, upgrade).")).set(Int64(handshakes))
        registry.makeGauge(descriptor: Self.name("offline_queue_messages", "", "Messages waiting in offline queues.")).set(Int64(queued.messages))
        registry.makeGauge(descriptor: Self.name("offline_queue", "bytes", "Bytes waiting in offline queues.")).set(Int64(queued.bytes))
        return registry.emitToString()
    }
}
