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
    /// The auth hook's link, with an `authorize` closure.
    private let authLink: NIOLoopBoundBox<InProcessAuthLink?>

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
        if authorize == nil {
            configuration.authTimeoutMs = 0
        } else if configuration.authTimeoutMs <= 0 {
            configuration.authTimeoutMs = Self.defaultAuthTimeoutMs  // 0 would mean "no policy": everyone allowed
        }
        self.configuration = configuration
        self.loop = loop
        held = .makeEmptyBox(valueType: BrokerState.self, eventLoop: loop)
        ticker = .makeEmptyBox(valueType: RepeatedTask.self, eventLoop: loop)
        stopped = .makeEmptyBox(valueType: Bool.self, eventLoop: loop)
        authLink = .makeEmptyBox(valueType: InProcessAuthLink.self, eventLoop: loop)
        let setUp: @Sendable () -> Void = { [held, ticker, authLink, configuration] in
            let state = BrokerState(configuration: configuration, tls: nil, loop: loop, logger: logger)
            if let authorize, let auth = state.auth {
                auth.forwardsEvents = false  // events go to `onEvent`
                let link = InProcessAuthLink(loop: loop, authorize: authorize)
                link.generation = auth.attach(link: link)
                link.auth = auth
                authLink.value = link
            }
            state.connections.forwardEvent = onEvent
            held.value = state
            BrokerServer.startTicker(state, ticker)
        }
        // On the loop already (made in a channel initializer, or a test): ready before this returns.
        if loop.inEventLoop { setUp() } else { loop.execute(setUp) }
    }

    /// The auth hook's deadline when the configuration has none.
    package static let defaultAuthTimeoutMs: Int64 = 5000

    /// Serves `channel` (an accepted TCP connection, on ``loop``, nothing read from it yet or
    /// what was read fired again after this) as the daemon's broker serves a hand-off: the
    /// handshake deadline, the per-address and handshake limits, then HTTP routes or a PeerJS
    /// socket. Throws when it cannot: the caller closes the channel.
    /// `since`: when the connection started, if earlier (a router read its first line): the
    /// handshake deadline counts from then.
    package func serve(_ channel: any Channel, since: NIODeadline? = nil) throws(EmbeddedBrokerError) {
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
            try BrokerServer.configure(channel, state: state, address: address, tls: false, slot: slot, since: since)
        } catch {
            state.admission.closed(slot)
            throw .pipeline("\(error)")
        }
    }

    /// Closes every PeerJS socket with `1001 going away` and every connection still in its
    /// handshake, refuses new ones, and stops the timers. Completes when the closes have.
    package func shutdown() -> EventLoopFuture<Void> {
        loop.flatSubmit { [held, ticker, stopped, authLink, loop] in
            stopped.value = true
            ticker.value?.cancel()
            ticker.value = nil
            guard let state = held.value else { return loop.makeSucceededVoidFuture() }
            state.admission.closeHandshakes()
            authLink.value?.cancelAll()
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
/// AuthClient keeps the deadline (`Auth Timeout`) and the order. At the same deadline the link
/// cancels the question's task and frees its place: at most ``maxInFlight`` questions are out at
/// once, and at most ``maxTasks`` tasks live (one that ignores its cancellation keeps living);
/// past either the link is "full" and AuthClient holds the questions, then fails them. A hook
/// that hangs costs denials for as long as it hangs, never unbounded memory or an allow.
final class InProcessAuthLink: AuthLink {
    /// The most questions out at once (each until its answer or its deadline).
    let maxInFlight: Int
    /// The most tasks alive at once, cancelled ones that have not ended included.
    let maxTasks: Int
    /// Tasks started and not yet ended.
    private(set) var tasks = 0

    private let loop: any EventLoop
    private let authorize: EmbeddedBroker.Authorize
    weak var auth: AuthClient?
    var generation = 0
    /// The running questions by request id, with the deadline that cancels each.
    private var running: [UInt32: (task: Task<Void, Never>, deadline: Scheduled<Void>)] = [:]
    /// After ``cancelAll()`` (shutdown) every question is denied without asking.
    private var closed = false

    var inFlight: Int { running.count }

    init(loop: any EventLoop, maxInFlight: Int = 1024, maxTasks: Int = 4096, authorize: @escaping EmbeddedBroker.Authorize) {
        self.loop = loop
        self.maxInFlight = maxInFlight
        self.maxTasks = maxTasks
        self.authorize = authorize
    }

    func sendFrame(_ frame: EncodedFrame) throws(IPCError) {
        guard frame.type == .authQuery else { return }  // events: the stream has them already
        let bound = NIOLoopBound(self, eventLoop: loop)
        let requestID = frame.requestID
        if closed {
            // Answered on a later turn: AuthClient is in the middle of asking.
            loop.execute { bound.value.auth?.handle(.verdict(requestID: requestID, AuthVerdict(allow: false)), generation: bound.value.generation) }
            return
        }
        guard running.count < maxInFlight, tasks < maxTasks else {
            throw IPCError(.wouldBlock, "\(running.count) auth hooks are running, \(tasks) tasks alive")
        }
        let query = try AuthQuery(decoding: frame.payload)
        let authorize = self.authorize
        tasks += 1
        let task = Task {
            let answer = await authorize(query)
            bound.eventLoop.execute {
                bound.value.tasks -= 1
                bound.value.answered(requestID, answer)
            }
        }
        let deadline = loop.scheduleTask(in: .milliseconds(auth?.timeoutMs ?? EmbeddedBroker.defaultAuthTimeoutMs)) {
            bound.value.expired(requestID)
        }
        running[requestID] = (task, deadline)
    }

    /// The question's deadline passed (AuthClient has answered `Auth Timeout`): its task is
    /// cancelled and its place freed.
    private func expired(_ requestID: UInt32) {
        running.removeValue(forKey: requestID)?.task.cancel()
    }

    /// Cancels every question (the server shuts down): their clients are being closed, and
    /// AuthClient answers them `Auth Timeout` at their deadlines (nothing registers).
    func cancelAll() {
        closed = true
        for (_, entry) in running {
            entry.task.cancel()
            entry.deadline.cancel()
        }
        running.removeAll()
    }

    private func answered(_ requestID: UInt32, _ answer: AuthorizationAnswer) {
        guard let entry = running.removeValue(forKey: requestID) else { return }  // past its deadline
        entry.deadline.cancel()
        let verdict: AuthVerdict
        switch answer {
        case .allow: verdict = AuthVerdict(allow: true)
        case .deny(let text): verdict = AuthVerdict(allow: false, reason: Self.truncated(text, toBytes: AuthVerdict.maxReasonLength))
        case .timedOut: verdict = AuthVerdict(allow: false, reason: ProtocolText.authTimeout)
        case .failed: verdict = AuthVerdict(allow: false)
        case .unaskable: verdict = AuthVerdict(allow: false, reason: ProtocolText.invalidID)
        }
        auth?.handle(.verdict(requestID: requestID, verdict), generation: generation)
    }

    /// The longest prefix of `text`, in whole characters, of at most `limit` UTF-8 bytes.
    static func truncated(_ text: String, toBytes limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var result = ""
        var bytes = 0
        for character in text {
            bytes += character.utf8.count
            guard bytes <= limit else { break }
            result.append(character)
        }
        return result
    }
}
