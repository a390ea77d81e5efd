public import IPC
public import Logging
import PeerProtocol

extension BrokerConfiguration {
    /// The configuration the supervisor sent in `hello` or `reload`.
    public init(_ settings: BrokerSettings) {
        self.init(
            protocolSettings: ProtocolSettings(
                keys: [settings.key],
                expireTimeoutMs: Int64(settings.expireTimeoutMs),
                aliveTimeoutMs: Int64(settings.aliveTimeoutMs),
                concurrentLimit: Int(settings.concurrentLimit),
                allowDiscovery: settings.allowDiscovery,
                cleanupIntervalMs: Int64(settings.cleanupIntervalMs)),
            path: settings.path,
            corsOrigins: settings.corsOrigins,
            proxied: settings.proxied,
            maxMessageBytes: Int(settings.maxMessageBytes),
            handshakeTimeoutMs: Int64(settings.handshakeTimeoutMs),
            threads: Int(settings.threads))
    }
}

/// The broker process: waits for `hello`, starts serving, then takes connections, reloads and
/// the drain order from the supervisor's channel until it ends. A bad frame from the
/// supervisor ends the broker (the supervisor starts a fresh one).
public enum BrokerRole {
    /// Runs the broker on the supervisor channel at `descriptor`; returns the exit status.
    /// - Parameters:
    ///   - confine: called with the supervisor's settings once the event loop threads run and
    ///     before `ready` is sent or any connection is received: the executable enters the
    ///     sandbox here (this module does not know how). Throwing ends the broker with status 3.
    public static func run(
        channelDescriptor: Int32, logger: Logger, confine: (BrokerSettings) throws -> Void
    ) -> Int32 {
        let channel = HandoffChannel(adopting: channelDescriptor, roles: ChannelRoles(local: .broker, remote: .supervisor))
        let server: BrokerServer
        do {
            guard let hello = try channel.receive() else {
                logger.notice("supervisor went away before hello")
                return 0
            }
            guard hello.type == .hello else {
                logger.error("expected hello from the supervisor, got \(hello.type)")
                return 2
            }
            let settings = try hello.decode(BrokerSettings.self)
            server = try BrokerServer(configuration: BrokerConfiguration(settings), logger: logger)
            do {
                try confine(settings)
            } catch {
                logger.critical("cannot enter the sandbox: \(error)")
                return 3
            }
            try channel.send(type: .ready)
        } catch {
            logger.error("broker start-up failed: \(error)")
            return 2
        }
        while true {
            do {
                guard var frame = try channel.receive() else {
                    logger.notice("supervisor channel closed; exiting")
                    return 0
                }
                switch frame.type {
                case .connection:
                    let handoff = try frame.decode(ConnectionHandoff.self)
                    guard let descriptor = frame.takeFD() else { continue }
                    server.adopt(descriptor: descriptor.release(), address: handoff.peer.description)
                case .reload:
                    server.reload(BrokerConfiguration(try frame.decode(BrokerSettings.self)))
                    logger.notice("configuration reloaded")
                case .drain:
                    let request = try frame.decode(DrainRequest.self)
                    server.drain(deadlineMs: Int64(request.deadlineMs))
                    logger.notice("drained; exiting")
                    return 0
                default:
                    logger.error("unexpected \(frame.type) frame from the supervisor; exiting")
                    return 2
                }
            } catch {
                logger.error("bad frame from the supervisor (\(error)); exiting")
                return 2
            }
        }
    }
}
