import IPC
import Logging
import NIOCore
import PeerProtocol

/// Reads NIO's monotonic clock for the engine.
struct UptimeClock: MonotonicClock {
    var nowMilliseconds: Int64 { Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000) }
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

    init(configuration: BrokerConfiguration, tls: (any TLSProvider)?, loop: any EventLoop, logger: Logger) {
        self.configuration = configuration
        self.tls = tls
        self.logger = logger
        self.connections = ConnectionTable(logger: logger)
        self.admission = Admission(
            configuration: configuration,
            budget: DescriptorLimit.budget(
                openFiles: DescriptorLimit.current(), reserve: Int(BrokerSettings.descriptorReserve), configuration: configuration),
            loop: loop, logger: logger)
        self.engine = SignalingEngine(
            settings: configuration.protocolSettings, registry: InMemoryRegistry(), transport: connections,
            clock: UptimeClock())
        auth = configuration.authTimeoutMs > 0
            ? AuthClient(loop: loop, timeoutMs: configuration.authTimeoutMs, logger: logger) : nil
        if let auth {
            auth.decide = { [unowned self] connection, request, denial in
                self.finishRegistration(connection, request: request, denial: denial)
            }
            auth.forwardsEvents = configuration.authEvents
            connections.eventSink = { [unowned auth] event in auth.forward(event) }
        }
    }

    func update(_ configuration: BrokerConfiguration) {
        self.configuration = configuration
        admission.update(configuration, budget: descriptorBudget(for: configuration))
        engine.update(configuration.protocolSettings)
        if configuration.authTimeoutMs > 0 { auth?.timeoutMs = configuration.authTimeoutMs }
        auth?.forwardsEvents = configuration.authEvents
    }

    /// A WebSocket client asks to register. Without an auth helper the engine decides at once
    /// (the fast path); with one, the parameter checks (missing, then the length and character
    /// rules) run first and the helper is asked before the key and id checks (PROTOCOL.md §9,
    /// "Suggested mapping"). Returns true when the verdict is pending: the flush after it sends
    /// whatever was written before it too.
    func startRegistration(_ connection: ConnectionID, request: RegistrationRequest, address: String) -> Bool {
        guard let auth, let id = request.id, !id.isEmpty, let token = request.token, !token.isEmpty,
            let key = request.key, !key.isEmpty, request.violation == nil
        else {
            engine.register(connection, request: request)
            return false
        }
        auth.ask(connection, request: request, ip: Self.host(of: address))
        return true
    }

    private func finishRegistration(_ connection: ConnectionID, request: RegistrationRequest, denial: String?) {
        guard connections.contains(connection) else {
            auth?.forget(connection)  // the client left while the helper was deciding
            return
        }
        if let denial {
            logger.info("auth denied \(request.id ?? ""): \(denial)")
            engine.deny(connection, reason: denial)
        } else if case .rejected = engine.register(connection, request: request) {
            auth?.forget(connection)
        }
        connections.flush()  // a verdict is a unit of work of its own (OPEN or ERROR goes out now)
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
