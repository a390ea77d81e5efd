public import Logging
import Glibc
public import IPC
import NIOCore
import NIOHTTP1
import NIOPosix
import PeerProtocol
import Synchronization

/// The internet-facing half of peerjs: serves HTTP and PeerJS WebSockets on connected sockets
/// it is handed (it never accepts or opens a socket itself), with all state on one event loop.
public final class BrokerServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let loop: any EventLoop
    private let state: NIOLoopBound<BrokerState>
    private let ticker: NIOLoopBoundBox<RepeatedTask?>
    /// Hand-offs received and not yet adopted, in order; the loop takes them when the doorbell
    /// pipe says so (see ``adopt(descriptor:address:tls:)``).
    private let inbox = HandoffInbox()
    /// The write end of the doorbell pipe: one byte per hand-off in `inbox`. Blocking, so a
    /// loop that falls behind holds the receiving thread back (and the supervisor with it).
    private let doorbell: Int32

    struct Handoff {
        var descriptor: Int32
        var address: String
        var tls: Bool
        /// When the supervisor accepted it (CLOCK_MONOTONIC ns; 0: unknown).
        var acceptedAtNs: UInt64 = 0
    }

    /// The hand-offs between the receiving thread and the loop.
    final class HandoffInbox: Sendable {
        let pending = Mutex<[Handoff]>([])
    }

    /// Hand-offs one doorbell read takes: a flood of new connections is adopted in turns with
    /// the I/O of the connections already there, never ahead of all of it.
    static let adoptionsPerTurn = 32

    /// Starts the one event-loop thread that holds all state (an explicit count: nothing probes the CPUs later). `tls`
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
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw BrokerDoorbellUnavailable(errno: errno) }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        doorbell = fds[1]
        let inbox = self.inbox
        let state = self.state
        _ = try NIOPipeBootstrap(group: loop)
            .channelOption(.maxMessagesPerRead, value: 1)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: Self.adoptionsPerTurn))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        HandoffDoorbell { count in
                            let taken = inbox.pending.withLock { pending in
                                let taken = Array(pending.prefix(count))
                                pending.removeFirst(taken.count)
                                return taken
                            }
                            for handoff in taken { Self.adopt(handoff, state: state.value, on: loop) }
                        })
                }
            }
            .takingOwnershipOfDescriptor(input: fds[0]).wait()
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

    static func startTicker(_ state: BrokerState, _ ticker: NIOLoopBoundBox<RepeatedTask?>) {
        ticker.value?.cancel()
        let bound = NIOLoopBound(state, eventLoop: ticker.eventLoop)
        let interval = TimeAmount.milliseconds(state.engine.tickIntervalMs)
        ticker.value = state.engine.tickIntervalMs > 0
            ? ticker.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                bound.value.tick()
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

    /// Talks to the cluster role over `descriptor` from now on; not clustered, it is closed and ignored.
    public func attachCluster(descriptor: Int32) {
        let channel = HandoffChannel(adopting: descriptor, roles: ChannelRoles(local: .broker, remote: .cluster))
        loop.execute { [state] in
            guard let cluster = state.value.cluster else {
                state.value.logger.warning("a cluster role channel arrived but this instance is not clustered; ignoring it")
                return
            }
            cluster.attach(channel)
        }
    }

    /// Uses `provider` for TLS handshakes from now on (SIGHUP with a renewed certificate);
    /// established connections keep the one they started with. Returns once the loop has it,
    /// so the `tlsAck` the caller sends next is true: a connection handed over after it gets the
    /// new certificate (the loop handles a hand-off's I/O before a queued task, so without the
    /// wait a connection could still meet the old one). Called from the broker's main thread,
    /// never from the loop. Throws when the loop is gone (the caller then refuses the generation).
    public func updateTLS(_ provider: any TLSProvider) throws {
        try loop.submit { [state] in state.value.tls = provider }.wait()
    }

    /// Takes ownership of a connected TCP socket and serves it. `address` is the client's
    /// address as the supervisor saw it (for logs and policy); with `tls`, the connection
    /// starts with a TLS handshake that must finish within the handshake timeout.
    ///
    /// The connection waits in an inbox and a byte is written to a pipe the loop reads as I/O:
    /// NIO runs every queued task before it polls again, so a task per hand-off would let a
    /// flood of new connections keep the loop from reading the peers it already has.
    public func adopt(descriptor: Int32, address: String, tls: Bool = false, acceptedAtNs: UInt64 = 0) {
        inbox.pending.withLock { $0.append(Handoff(descriptor: descriptor, address: address, tls: tls, acceptedAtNs: acceptedAtNs)) }
        var byte: UInt8 = 1
        for _ in 0..<64 {
            let written = write(doorbell, &byte, 1)
            if written == 1 || (written < 0 && errno != EINTR) { break }
        }
    }

    /// Adopts one hand-off on the loop: admission first, then the channel, whose options are set
    /// directly (the bootstrap's option list costs a future per option).
    private static func adopt(_ handoff: Handoff, state: BrokerState, on loop: any EventLoop) {
        let (descriptor, address, tls) = (handoff.descriptor, handoff.address, handoff.tls)
        state.admission.arrived()
        state.metrics?.handedOff(acceptedAtNs: handoff.acceptedAtNs)
        guard let slot = state.admission.admit(socketAddress: BrokerState.host(of: address)) else {
            state.counters.addressHandshakeLimitHits += 1
            close(descriptor)  // too many unfinished handshakes from this address
            return
        }
        let state = NIOLoopBound(state, eventLoop: loop)
        ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let options = channel.syncOptions {
                        try options.setOption(.recvAllocator, value: Self.receiveBuffers)
                        try options.setOption(.writeBufferWaterMark, value: OutputLimit.waterMark(state.value.configuration.outputLimit))
                    }
                    try Self.configure(channel, state: state.value, address: address, tls: tls, slot: slot)
                }
            }
            .withConnectedSocket(descriptor)
            .whenFailure { error in
                state.value.admission.closed(slot)  // no channel, so configure() did not tie the slot to one
                state.value.logger.warning("could not adopt a connection", metadata: ["error": "\(error)"])
            }
    }

    /// A hand-off arrived without its descriptor (the broker's descriptor table was full): the
    /// connection is lost, its credit is used.
    public func lostConnection() {
        loop.execute { [state] in state.value.admission.arrived() }
    }

    /// Starts granting the supervisor credit over `channel`, from a descriptor limit re-read now
    /// (after the sandbox set it). Call once, after `ready`.
    public func startAdmission(channel: HandoffChannel) {
        loop.execute { [state] in
            let admission = state.value.admission
            admission.update(state.value.configuration, budget: state.value.descriptorBudget(for: state.value.configuration))
            let logger = state.value.logger
            admission.sendCredit = { count in
                do throws(IPCError) {
                    try channel.send(AdmissionCredit(count: UInt32(clamping: count)), nonBlocking: true)
                    return true
                } catch where error.code == .wouldBlock {
                    return false
                } catch {
                    logger.error("cannot grant the supervisor credit (\(error))")
                    return true  // the supervisor is gone; the broker ends when its channel does
                }
            }
            admission.grantCredit()
        }
    }

    /// With `--metrics-port`: sends the broker's series to the supervisor over `channel` now and
    /// every `metricsIntervalMs` (a full channel skips a turn; the next one carries the totals).
    /// Call once, after `ready`.
    public func startMetrics(channel: HandoffChannel) {
        loop.execute { [state, loop] in
            let interval = state.value.configuration.metricsIntervalMs
            guard interval > 0, state.value.metrics != nil else { return }
            guard Self.sendMetrics(state.value, over: channel) else { return }
            _ = loop.scheduleRepeatedTask(initialDelay: .milliseconds(interval), delay: .milliseconds(interval)) { task in
                if !Self.sendMetrics(state.value, over: channel) { task.cancel() }
            }
        }
    }

    /// Sends one `metrics` frame; false when the channel is broken (no more are sent: the broker
    /// ends with its supervisor channel).
    private static func sendMetrics(_ state: BrokerState, over channel: HandoffChannel) -> Bool {
        let text = state.exportMetrics()
        guard text.utf8.count <= MetricsText.maxLength else {
            state.logger.warning("the metrics are \(text.utf8.count) bytes, more than a metrics frame holds (\(MetricsText.maxLength)); not sent")
            return true
        }
        do throws(IPCError) {
            try channel.send(MetricsText(text: text, residentBytes: state.metrics?.residentBytes ?? 0), nonBlocking: true)
        } catch where error.code == .wouldBlock {
            return true
        } catch {
            state.logger.error("cannot send the metrics to the supervisor (\(error)); no more will be sent")
            return false
        }
        return true
    }

    /// Receive buffers start at 256 bytes and grow with the traffic: most peers are idle, and
    /// NIO's 2 KiB default would be most of an idle peer's memory.
    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536)

    /// Sets up an adopted connection: ties it to its admission `slot` (freed when it closes),
    /// then TLS if asked for, then the handshake handler. The fuzz harness and the handler tests
    /// set up their in-memory channels with this too. `since`: when the connection started, if
    /// earlier than now (PeerJSKit's router read its first line): the handshake deadline's start.
    static func configure(
        _ channel: any Channel, state: BrokerState, address: String, tls: Bool, slot: UInt64, since: NIODeadline? = nil
    ) throws {
        state.admission.attach(slot, channel: channel)
        let bound = NIOLoopBound(state, eventLoop: channel.eventLoop)
        channel.closeFuture.whenComplete { _ in bound.value.admission.closed(slot) }
        let configuration = state.configuration
        if tls {
            guard let provider = state.tls else {
                throw BrokerTLSUnavailable()
            }
            try provider.addServerHandlers(to: channel)
            try channel.pipeline.syncOperations.addHandler(
                TLSHandshakeDeadlineHandler(provider: provider, timeout: .milliseconds(configuration.handshakeTimeoutMs)))
        }
        try channel.pipeline.syncOperations.addHandler(WebSocketHandshakeHandler(state: state, address: address, slot: slot, since: since))
    }

    /// Closes every peer with `1001 going away` and every connection still in its handshake,
    /// and waits for the closes to finish, at most `deadlineMs` (a client that does not read
    /// cannot hold the drain up: past the deadline the broker exits and the kernel closes).
    public func drain(deadlineMs: Int64) {
        let done = loop.makePromise(of: Void.self)
        loop.execute { [state, loop] in
            // Whichever comes first, the last close or the deadline, ends the wait.
            let finished = NIOLoopBoundBox(false, eventLoop: loop)
            let timer = loop.scheduleTask(in: .milliseconds(deadlineMs)) {
                guard !finished.value else { return }
                finished.value = true
                done.succeed(())
            }
            state.value.admission.closeHandshakes()
            EventLoopFuture.andAllComplete(state.value.connections.closeAll(), on: loop).whenComplete { _ in
                timer.cancel()
                guard !finished.value else { return }
                finished.value = true
                done.succeed(())
            }
        }
        _ = try? done.futureResult.wait()
    }

    /// Counters for the supervisor.
    public func statistics() -> (registered: Int, connections: Int, queuedMessages: Int) {
        (try? loop.submit { [state] in
            let stats = state.value.engine.statistics
            return (stats.registered, state.value.connections.count, stats.queuedMessages)
        }.wait()) ?? (0, 0, 0)
    }
}

/// Reads the doorbell pipe and adopts one waiting hand-off per byte (at most
/// ``BrokerServer/adoptionsPerTurn`` per read, one read per loop turn).
private final class HandoffDoorbell: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let adopt: (Int) -> Void

    init(adopt: @escaping (Int) -> Void) {
        self.adopt = adopt
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        adopt(unwrapInboundIn(data).readableBytes)
    }
}

/// The pipe that wakes the loop for new hand-offs could not be made (before the sandbox).
struct BrokerDoorbellUnavailable: Error, CustomStringConvertible {
    let errno: Int32
    var description: String { "cannot create the hand-off pipe: \(String(cString: strerror(errno)))" }
}

/// A connection came from a TLS listener but the broker holds no TLS material (the supervisor
/// checks for this at start, so it means a bug); the connection is closed.
struct BrokerTLSUnavailable: Error, CustomStringConvertible {
    var description: String { "a TLS connection arrived but no certificate and key were received" }
}
