import IPC
import Logging
import NIOCore
import PeerProtocol

/// Reads NIO's monotonic clock for the engine.
struct UptimeClock: MonotonicClock {
    var nowMilliseconds: Int64 { Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000) }
}

/// Reads an event loop's clock for the engine: on an `EmbeddedEventLoop` (the fuzz harness, the
/// handler tests) the engine then keeps the loop's virtual time.
struct EventLoopClock: MonotonicClock {
    let loop: any EventLoop
    var nowMilliseconds: Int64 { Int64(loop.now.uptimeNanoseconds / 1_000_000) }
}

/// The broker's mutable world — configuration, engine, open connections — confined to the one
/// event loop that serves every connection, so it needs no locks.
final class BrokerState {
    var configuration: BrokerConfiguration
    let connections: ConnectionTable
    let engine: SignalingEngine<ConnectionTable, InMemoryRegistry>
    let logger: Logger
    /// TLS for new connections from `https` listeners: the latest material the supervisor sent
    /// (a reload replaces it; connections already running keep theirs). Nil until some arrives.
    var tls: (any TLSProvider)?
    /// The auth helper's client; nil when no helper is configured (everyone is allowed).
    let auth: AuthClient?
    /// The descriptor budget and per-address limits of every adopted connection.
    let admission: Admission
    /// The cluster role's client; nil when not clustered (`--cluster`).
    let cluster: ClusterClient?
    /// The series for `--metrics-port`; nil without it (nothing is kept then).
    let metrics: BrokerMetrics?
    /// What the broker counts beside the engine: the per-address and output limits it enforces.
    var counters = BrokerCounters()

    /// - Parameter clock: the engine's clock (the handler tests give it the loop's virtual time).
    init(
        configuration: BrokerConfiguration, tls: (any TLSProvider)?, loop: any EventLoop, logger: Logger,
        clock: any MonotonicClock = UptimeClock()
    ) {
        self.configuration = configuration
        self.tls = tls
        self.logger = logger
        let connections = ConnectionTable(logger: logger)
        self.connections = connections
        let metrics = configuration.metricsIntervalMs > 0 ? BrokerMetrics() : nil
        self.metrics = metrics
        connections.metrics = metrics
        self.admission = Admission(
            configuration: configuration,
            budget: DescriptorLimit.budget(
                openFiles: DescriptorLimit.current(), reserve: Int(BrokerSettings.descriptorReserve), configuration: configuration),
            loop: loop, logger: logger)
        let hasHelper = configuration.authTimeoutMs > 0
        let engine = SignalingEngine(
            settings: Self.engineSettings(configuration, hasHelper: hasHelper), registry: InMemoryRegistry(),
            transport: connections, clock: clock)
        self.engine = engine
        let cluster = configuration.clustered
            ? ClusterClient(loop: loop, engine: engine, connections: connections,
                            limit: configuration.protocolSettings.concurrentLimit, logger: logger) : nil
        self.cluster = cluster
        connections.cluster = cluster
        auth = hasHelper
            ? AuthClient(loop: loop, timeoutMs: configuration.authTimeoutMs, logger: logger) { query, answer in
                // A connection closed by a drain has left the table before its channel is inactive:
                // its registration is forgotten, never opened on a dead socket.
                guard connections.contains(query.connection) else {
                    engine.connectionClosed(query.connection)
                    return
                }
                Self.follow(engine.verdict(answer, for: query.connection), id: query.id, engine: engine, cluster: cluster, logger: logger)
                connections.flush()  // a verdict is a unit of work of its own (OPEN or ERROR goes out now)
            } : nil
        if let auth {
            auth.forwardsEvents = configuration.authEvents
            connections.forwardEvent = { [unowned auth] event in auth.forward(event) }
        }
    }

    /// The engine's settings: the protocol's, and whether a policy decides (only with a helper:
    /// a reload cannot start one, so without it everyone stays allowed).
    private static func engineSettings(_ configuration: BrokerConfiguration, hasHelper: Bool) -> ProtocolSettings {
        var settings = configuration.protocolSettings
        settings.authorizes = hasHelper
        settings.clustered = configuration.clustered
        return settings
    }

    func update(_ configuration: BrokerConfiguration) {
        self.configuration = configuration
        admission.update(configuration, budget: descriptorBudget(for: configuration))
        var settings = Self.engineSettings(configuration, hasHelper: auth != nil)
        settings.clustered = cluster != nil  // like the helper: a reload cannot start or stop it
        engine.update(settings)
        if configuration.authTimeoutMs > 0 { auth?.timeoutMs = configuration.authTimeoutMs }
        auth?.forwardsEvents = configuration.authEvents
        cluster?.limit = configuration.protocolSettings.concurrentLimit
    }

    /// A WebSocket client from `ip` asks to register: the engine decides, asking the auth helper
    /// when it says so. Returns true while the helper decides: the flush after the verdict sends
    /// whatever was written before it too.
    func admit(_ connection: ConnectionID, request: RegistrationRequest, ip: String) -> Bool {
        let action = engine.admit(connection, request: request, ip: ip)
        guard case .authorize(let query) = action else {
            return Self.follow(action, id: request.id ?? "", engine: engine, cluster: cluster, logger: logger)
        }
        // No helper cannot happen (the engine asks only with one): fail closed all the same.
        guard let answer = auth.map({ $0.ask(query) }) ?? AuthorizationAnswer.failed else { return true }
        return Self.follow(engine.verdict(answer, for: connection), id: query.id, engine: engine, cluster: cluster, logger: logger)
    }

    /// Does what a registration action asks (a claim goes to the peer directory) and logs a
    /// denial. Returns true while an answer is awaited.
    @discardableResult
    private static func follow(
        _ action: RegistrationAction, id: String, engine: SignalingEngine<ConnectionTable, InMemoryRegistry>,
        cluster: ClusterClient?, logger: Logger
    ) -> Bool {
        switch action {
        case .refuse(.denied(let text)):
            logger.info("auth denied \(id): \(text)")
        case .claim(let claim):
            // Not clustered cannot happen (the engine claims only then): refuse all the same.
            guard let answer = cluster.map({ $0.claim(claim) }) ?? ClaimAnswer.unavailable else { return true }
            return follow(engine.claimed(answer, for: claim.connection), id: id, engine: engine, cluster: cluster, logger: logger)
        case .takeover:
            return true  // the engine answers from its tick, or when the id's holder answers its ping
        case .authorize, .open, .refuse, .none:
            break
        }
        return false
    }

    /// The metrics in the Prometheus text format (`--metrics-port`); empty without them.
    func exportMetrics() -> String {
        guard let metrics else { return "" }
        let statistics = engine.statistics
        let keys = configuration.protocolSettings.keys.sorted()
        return metrics.export(
            engine: engine.counters, counters: counters, handshakes: admission.handshakes,
            queued: (statistics.queuedMessages, statistics.queuedBytes),
            peers: keys.map { ($0, engine.registeredCount(key: $0)) })
    }

    /// The engine's periodic rules, and the directory claims a takeover starts (clustered).
    func tick() {
        for claim in engine.tick() {
            Self.follow(.claim(claim), id: claim.id, engine: engine, cluster: cluster, logger: logger)
        }
        connections.flush()
    }

    /// Sets the descriptor limit `configuration` wants (soft limit, up to the hard limit) and
    /// returns the connections it leaves room for. Never below the descriptors in use: a reload
    /// that lowers the limits lets the connections held drain instead of making the next
    /// hand-off (or the auth helper's channel) arrive without its descriptor.
    func descriptorBudget(for configuration: BrokerConfiguration) -> Int {
        let reserve = Int(BrokerSettings.descriptorReserve)
        let wanted = configuration.protocolSettings.concurrentLimit + configuration.handshakeLimit + reserve
        let inUse = admission.held + admission.outstanding + reserve
        return DescriptorLimit.budget(openFiles: DescriptorLimit.set(max(wanted, inUse)), reserve: reserve, configuration: configuration)
    }

    /// `1.2.3.4:5000` → `1.2.3.4`, `[::1]:5000` → `::1`; anything else unchanged.
    static func host(of address: String) -> String {
        if address.hasPrefix("["), let end = address.firstIndex(of: "]") {
            return String(address[address.index(after: address.startIndex)..<end])
        }
        if address.filter({ $0 == ":" }).count == 1, let colon = address.firstIndex(of: ":") {
            return String(address[..<colon])
        }
        return address
    }
}
