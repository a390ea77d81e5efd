package import IPC
package import Logging
package import NIOCore
import NIOWebSocket
package import PeerProtocol

/// The broker's engine, handlers and limits inside another program (PeerJSKit): connections
/// come from the app's own server on ``loop`` instead of the supervisor, and the policy is a
/// closure instead of the auth helper. Nothing here is sandboxed: the app's process holds
/// whatever privileges and files it has.
package final class EmbeddedBroker: Sendable {
    /// The policy: the client's parameters in, an answer out (`.allow`, or `.deny(text)`).
    package typealias Authorize = @Sendable (AuthQuery) async -> AuthorizationAnswer

    package let loop: any EventLoop
    package let configuration: BrokerConfiguration
    private let held: NIOLoopBoundBox<BrokerState?>
    private let ticker: NIOLoopBoundBox<RepeatedTask?>
    /// Set by ``shutdown()``: nil until then.
    private let stopped: NIOLoopBoundBox<Bool?>

    /// Sets the state up on `loop` (a task queued now, so it runs before any connection the app
    /// accepts later). `onEvent` is told of every registration and departure, on the loop.
    package init(
        configuration: BrokerConfiguration, loop: any EventLoop, logger: Logger, authorize: Authorize?,
        onEvent: @escaping @Sendable (PeerEvent) -> Void
    ) {
        var configuration = configuration
        configuration.mounted = true
        configuration.clustered = false  // a directory needs the cluster role: the daemon's
        configuration.metricsIntervalMs = 0
        if authorize == nil { configuration.authTimeoutMs = 0 }
        self.configuration = configuration
        self.loop = loop
        held = .makeEmptyBox(valueType: BrokerState.self, eventLoop: loop)
        ticker = .makeEmptyBox(valueType: RepeatedTask.self, eventLoop: loop)
        stopped = .makeEmptyBox(valueType: Bool.self, eventLoop: loop)
        loop.execute { [held, ticker, configuration] in
            let state = BrokerState(configuration: configuration, tls: nil, loop: loop, logger: logger)
            if let authorize, let auth = state.auth {
                auth.forwardsEvents = false  // events go to `onEvent`
                let link = InProcessAuthLink(loop: loop, authorize: authorize)
                link.generation = auth.attach(link: link)
                link.auth = auth
            }
            state.connections.forwardEvent = onEvent
            held.value = state
            BrokerServer.startTicker(state, ticker)
        }
    }

    /// Serves `channel` (an accepted TCP connection, on ``loop``, nothing read from it yet or
    /// what was read fired again after this) as the daemon's broker serves a hand-off: the
    /// handshake deadline, the per-address and handshake limits, then HTTP routes or a PeerJS
    /// socket. Throws when it cannot: the caller closes the channel.
    package func serve(_ channel: any Channel) throws(EmbeddedBrokerError) {
        guard channel.eventLoop === loop else { throw .otherEventLoop }
        guard stopped.value == nil, let state = held.value else { throw .stopped }
        let address = Self.describe(channel.remoteAddress)
        guard let slot = state.admission.admit(socketAddress: BrokerState.host(of: address)) else {
            state.counters.addressHandshakeLimitHits += 1
            throw .handshakeLimit(address)
        }
        do {
            if let options = channel.syncOptions {
                try options.setOption(.recvAllocator, value: BrokerServer.receiveBuffers)
                try options.setOption(.writeBufferWaterMark, value: OutputLimit.waterMark(state.configuration.outputLimit))
                // Hummingbird lets clients half-close; a PeerJS socket ends with its input, as in the daemon.
                try options.setOption(.allowRemoteHalfClosure, value: false)
            }
            try channel.pipeline.syncOperations.addHandler(QuiesceHandler())
            try BrokerServer.configure(channel, state: state, address: address, tls: false, slot: slot)
        } catch {
            state.admission.closed(slot)
            throw .pipeline("\(error)")
        }
    }

    /// Closes every PeerJS socket with `1001 going away` and every connection still in its
    /// handshake, refuses new ones, and stops the timers. Completes when the closes have.
    package func shutdown() -> EventLoopFuture<Void> {
        loop.flatSubmit { [held, ticker, stopped, loop] in
            stopped.value = true
            ticker.value?.cancel()
            ticker.value = nil
            guard let state = held.value else { return loop.makeSucceededVoidFuture() }
            state.admission.closeHandshakes()
            return EventLoopFuture.andAllComplete(state.connections.closeAll(), on: loop)
        }
    }

    /// Registered peers and open PeerJS sockets, read on the loop.
    package func statistics() -> EventLoopFuture<(registered: Int, connections: Int)> {
        loop.submit { [held] in
            (held.value?.engine.statistics.registered ?? 0, held.value?.connections.count ?? 0)
        }
    }

    /// `1.2.3.4:5000`, `[::1]:5000`: the form the supervisor hands over.
    static func describe(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress else { return "?" }
        let port = address.port ?? 0
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }
}

/// Why ``EmbeddedBroker/serve(_:)`` did not take a connection.
package enum EmbeddedBrokerError: Error, CustomStringConvertible {
    case otherEventLoop
    case stopped
    case handshakeLimit(String)
    case pipeline(String)

    package var description: String {
        switch self {
        case .otherEventLoop:
            "the connection is on another event loop than the PeerJS server's: serve the app from the server's eventLoop"
        case .stopped: "the PeerJS server is shut down"
        case .handshakeLimit(let address):
            "too many unfinished handshakes from \(LogText.escaped(address)) (ipHandshakeLimit); connection closed"
        case .pipeline(let why): "could not set up the connection: \(why)"
        }
    }
}

/// Hummingbird's graceful shutdown (and any server using NIO's `ServerQuiescingHelper`) asks
/// each connection to finish: a PeerJS socket is closed with `1001 going away`, a connection
/// still in its HTTP handshake is closed.
final class QuiesceHandler: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else { return context.fireUserInboundEventTriggered(event) }
        if (try? context.pipeline.syncOperations.handler(type: PeerSocketHandler.self)) != nil {
            ConnectionTable.closeGently(context.channel, code: .goingAway)
        } else {
            context.close(promise: nil)
        }
    }
}

/// ``AuthClient``'s link when the policy is a closure in the same process: each question runs
/// the closure in a task, and its answer comes back to the loop like a helper's verdict. The
/// AuthClient keeps the deadline (`Auth Timeout`) and the order; questions in flight are bounded
/// (a closure that never returns fills it, then further questions wait, then fail).
final class InProcessAuthLink: AuthLink {
    /// The most closures running at once; past it the link is "full" and AuthClient holds the rest.
    static let maxInFlight = 1024

    private let loop: any EventLoop
    private let authorize: EmbeddedBroker.Authorize
    weak var auth: AuthClient?
    var generation = 0
    private var inFlight = 0

    init(loop: any EventLoop, authorize: @escaping EmbeddedBroker.Authorize) {
        self.loop = loop
        self.authorize = authorize
    }

    func sendFrame(_ frame: EncodedFrame) throws(IPCError) {
        guard frame.type == .authQuery else { return }  // events: the stream has them already
        guard inFlight < Self.maxInFlight else { throw IPCError(.wouldBlock, "\(inFlight) auth closures are running") }
        let query = try AuthQuery(decoding: frame.payload)
        inFlight += 1
        let requestID = frame.requestID
        let bound = NIOLoopBound(self, eventLoop: loop)
        let authorize = self.authorize
        Task {
            let answer = await authorize(query)
            bound.eventLoop.execute { bound.value.answered(requestID, answer) }
        }
    }

    private func answered(_ requestID: UInt32, _ answer: AuthorizationAnswer) {
        inFlight -= 1
        let verdict: AuthVerdict
        switch answer {
        case .allow: verdict = AuthVerdict(allow: true)
        case .deny(let text): verdict = AuthVerdict(allow: false, reason: String(text.prefix(AuthVerdict.maxReasonLength)))
        case .timedOut: verdict = AuthVerdict(allow: false, reason: ProtocolText.authTimeout)
        case .failed: verdict = AuthVerdict(allow: false)
        case .unaskable: verdict = AuthVerdict(allow: false, reason: ProtocolText.invalidID)
        }
        auth?.handle(.verdict(requestID: requestID, verdict), generation: generation)
    }
}
