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

    init(configuration: BrokerConfiguration, tls: (any TLSProvider)?, logger: Logger) {
        self.configuration = configuration
        self.tls = tls
        self.logger = logger
        self.connections = ConnectionTable(logger: logger)
        self.engine = SignalingEngine(
            settings: configuration.protocolSettings, registry: InMemoryRegistry(), transport: connections,
            clock: UptimeClock())
    }

    func update(_ configuration: BrokerConfiguration) {
        self.configuration = configuration
        engine.update(configuration.protocolSettings)
    }
}
