public import Logging
import Glibc
import IPC
import NIOCore
import NIOHTTP1
import NIOPosix
import PeerProtocol

/// The internet-facing half of peerjs: serves HTTP and PeerJS WebSockets on connected sockets
/// it is handed (it never accepts or opens a socket itself), with all state on one event loop.
public final class BrokerServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let loop: any EventLoop
    private let state: NIOLoopBound<BrokerState>
    private let ticker: NIOLoopBoundBox<RepeatedTask?>

    /// Starts the event loop (an explicit thread count: nothing probes the CPUs later). `tls`
    /// serves connections handed over with `tls: true`.
    public init(configuration: BrokerConfiguration, tls: (any TLSProvider)? = nil, logger: Logger) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
        let loop = self.loop
        (state, ticker) = try loop.submit {
            let state = BrokerState(configuration: configuration, tls: tls, loop: loop, logger: logger)
            return (NIOLoopBound(state, eventLoop: loop), NIOLoopBoundBox<RepeatedTask?>(nil, eventLoop: loop))
        }.wait()
        try loop.submit { [state, ticker] in Self.startTicker(state.value, ticker) }.wait()
        try Self.primeLazyGlobals(on: loop)
        _ = WebSocketUpgradeRequest.acceptValue(for: "dGhlIHNhbXBsZSBub25jZQ==")  // SHA-1's lazy set-up, before the filter
    }

    /// Runs, before the sandbox, what NIO does lazily the first time it wraps a descriptor (it
    /// ignores SIGPIPE with rt_sigaction from a lazy global), by adopting and closing a pipe:
    /// the seccomp filter that follows does not allow it.
    private static func primeLazyGlobals(on loop: any EventLoop) throws {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return }
        let channel = try NIOPipeBootstrap(group: loop).takingOwnershipOfDescriptors(input: fds[0], output: fds[1]).wait()
        try channel.close().wait()
    }

    private static func startTicker(_ state: BrokerState, _ ticker: NIOLoopBoundBox<RepeatedTask?>) {
        ticker.value?.cancel()
        let bound = NIOLoopBound(state, eventLoop: ticker.eventLoop)
        let interval = TimeAmount.milliseconds(state.engine.tickIntervalMs)
        ticker.value = state.engine.tickIntervalMs > 0
            ? ticker.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                bound.value.engine.tick()
                bound.value.connections.flush()
            }
            : nil
    }

    /// Applies a new configuration (SIGHUP); connected peers stay.
    public func reload(_ configuration: BrokerConfiguration) {
        loop.execute { [state, ticker] in
            state.value.update(configuration)
            Self.startTicker(state.value, ticker)
        }
    }

    /// Talks to the auth helper over `descriptor` (a SEQPACKET socket the supervisor passed) from
    /// now on; without an auth timeout configured the descriptor is closed and ignored.
    public func attachAuth(descriptor: Int32) {
        let channel = HandoffChannel(adopting: descriptor, roles: ChannelRoles(local: .broker, remote: .auth))
        loop.execute { [state] in
            guard let auth = state.value.auth else {
                state.value.logger.warning("an auth helper channel arrived but no auth timeout is configured; ignoring it")
                return
            }
            auth.attach(channel)
        }
    }

    /// Uses `provider` for TLS handshakes from now on (SIGHUP with a renewed certificate);
    /// established connections keep the one they started with.
    public func updateTLS(_ provider: any TLSProvider) {
        loop.execute { [state] in state.value.tls = provider }
    }

    /// Takes ownership of a connected TCP socket and serves it. `address` is the client's
    /// address as the supervisor saw it (for logs and policy); with `tls`, the connection
    /// starts with a TLS handshake that must finish within the handshake timeout.
    public func adopt(descriptor: Int32, address: String, tls: Bool = false) {
        let state = self.state
        // One hop to the loop, where the bootstrap then runs without hopping again; options are
        // set directly on the channel (the bootstrap's option list costs a future per option).
        loop.execute { [loop] in
            ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let options = channel.syncOptions {
                            try options.setOption(.recvAllocator, value: Self.receiveBuffers)
                            try options.setOption(.writeBufferWaterMark, value: Self.writeWaterMark)
                        }
                        try Self.configure(channel, state: state.value, address: address, tls: tls)
                    }
                }
                .withConnectedSocket(descriptor)
                .whenFailure { error in
                    state.value.logger.warning("could not adopt a connection", metadata: ["error": "\(error)"])
                }
        }
    }

    /// Receive buffers start at 256 bytes and grow with the traffic: most peers are idle, and
    /// NIO's 2 KiB default would be most of an idle peer's memory.
    private static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)
    private static let writeWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 32 * 1024, high: 256 * 1024)

    private static func configure(_ channel: any Channel, state: BrokerState, address: String, tls: Bool) throws {
        let configuration = state.configuration
        if tls {
            guard let provider = state.tls else {
                throw BrokerTLSUnavailable()
            }
            try provider.addServerHandlers(to: channel)
            try channel.pipeline.syncOperations.addHandler(
                TLSHandshakeDeadlineHandler(provider: provider, timeout: .milliseconds(configuration.handshakeTimeoutMs)))
        }
        try channel.pipeline.syncOperations.addHandler(WebSocketHandshakeHandler(state: state, address: address))
    }

    /// Closes every peer with `1001 going away` and waits (bounded) for the closes to finish.
    public func drain(deadlineMs: Int64) {
        let closed = loop.flatSubmit { [state, loop] in
            let futures = state.value.connections.closeAll()
            return EventLoopFuture.andAllComplete(futures, on: loop)
        }
        let timeout = loop.scheduleTask(in: .milliseconds(deadlineMs)) {}
        _ = try? closed.wait()
        timeout.cancel()
    }

    /// Counters for the supervisor.
    public func statistics() -> (registered: Int, connections: Int, queuedMessages: Int) {
        (try? loop.submit { [state] in
            let stats = state.value.engine.statistics
            return (stats.registered, state.value.connections.count, stats.queuedMessages)
        }.wait()) ?? (0, 0, 0)
    }
}

/// A connection came from a TLS listener but the broker holds no TLS material (the supervisor
/// checks for this at start, so it means a bug); the connection is closed.
struct BrokerTLSUnavailable: Error, CustomStringConvertible {
    var description: String { "a TLS connection arrived but no certificate and key were received" }
}
