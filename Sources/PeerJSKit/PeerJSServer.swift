public import Broker
// Apps configure it with the broker's configuration type (as `PeerJSServer.Configuration`).
@_exported public import struct Broker.BrokerConfiguration
import IPC
public import Logging
public import NIOCore
import NIOPosix
@_exported public import PeerProtocol
import Synchronization

/// PeerJS signalling inside your own SwiftNIO or Hummingbird server — the Swift counterpart of
/// peerjs-server's `ExpressPeerServer`. It runs the daemon's protocol engine, HTTP routes,
/// WebSocket handling and limits in the app's process, on one event loop.
///
/// In-process means no privilege separation: the code that parses clients' bytes runs with
/// everything the app holds. The `peerjs` daemon keeps that code in a sandboxed process; use
/// it (behind the app's reverse proxy) when that matters more than one process.
///
/// All the state lives on ``eventLoop``: the app serves its connections from that loop (give it
/// to Hummingbird as `eventLoopGroupProvider: .shared(server.eventLoop)`, or to a NIO
/// `ServerBootstrap` as its group). Mount it with ``mount(_:otherwise:)`` (a path of the app's
/// server) or hand it whole connections with ``serve(_:)``.
public final class PeerJSServer: Sendable {
    /// Every protocol setting (`protocolSettings`: keys, timeouts, limits, discovery), the base
    /// path (`path`, e.g. `/peerjs` for a client with `path: '/peerjs'`), CORS origins, size and
    /// time limits — the daemon's options, in the daemon's ranges (``BrokerConfiguration/problem``).
    /// `clustered` and `metricsIntervalMs` are the daemon's alone and ignored here; `authEvents`
    /// too (``events`` has them all); `mounted` is always on.
    public typealias Configuration = BrokerConfiguration

    /// What the auth hook is asked: a client's registration, before it gets `OPEN`.
    public struct Registration: Sendable, Equatable {
        public var id: String
        public var token: String
        public var key: String
        /// The client's address, without port (`X-Forwarded-For`'s with `proxied`).
        public var ip: String
        /// The client library's `version=` parameter; empty when absent.
        public var version: String

        public init(id: String, token: String, key: String, ip: String, version: String) {
            self.id = id
            self.token = token
            self.key = key
            self.ip = ip
            self.version = version
        }
    }

    /// The auth hook's answer.
    public enum Verdict: Sendable, Equatable {
        case allow
        /// Refused: the client gets `ERROR` with `reason` (`Error on Auth` when empty) and a close.
        case deny(reason: String)
    }

    /// Where ``mount(_:otherwise:)`` sent a connection.
    public enum Route<Other: Sendable>: Sendable {
        /// Its first request was under the base path: this server has it, until it closes.
        case peerJS
        /// The app's own pipeline (set up by `otherwise`) has it.
        case other(Other)
    }

    /// The auth hook's default deadline when the configuration has none (`authTimeoutMs` 0).
    public static let defaultAuthTimeoutMs: Int64 = EmbeddedBroker.defaultAuthTimeoutMs
    /// Events kept for a reader of ``events`` that falls behind; past it the oldest are dropped.
    public static let defaultEventBuffer = 4096

    /// The loop that holds the state and serves every connection.
    public let eventLoop: any EventLoop
    /// The configuration in force (mounted, without a cluster or metrics: those are the daemon's).
    public var configuration: Configuration { broker.configuration }
    /// `connection` and `disconnect` events (peerjs-server's `connection` / `disconnect`), in
    /// order. Read it from one task; a reader that falls more than the buffer behind loses the
    /// oldest (logged). Finished by ``shutdown()``.
    public let events: AsyncStream<PeerEvent>

    private let broker: EmbeddedBroker
    private let continuation: AsyncStream<PeerEvent>.Continuation
    private let logger: Logger

    /// - Parameters:
    ///   - configuration: the protocol settings and limits; `path` is where the app mounts it.
    ///   - eventLoop: the loop the app serves from; nil: one of NIO's shared singleton loops.
    ///   - eventBuffer: events kept for a slow reader of ``events``; 0: no events are kept (an
    ///     app that does not read them).
    ///   - logger: the broker's log lines ("Client connected: …") go here; values a client chose
    ///     in them are escaped (one record is one line, whatever the app's log handler does).
    ///   - authorize: the auth hook, asked before each registration; nil: everyone is allowed.
    ///     It must answer within `configuration.authTimeoutMs` (``defaultAuthTimeoutMs`` when 0);
    ///     a late answer is ignored and the client gets `Auth Timeout`; the hook's task is cancelled
    ///     then, and should end when it sees that (at most 1024 run at once; past that, questions
    ///     wait, then fail as `Error on Auth`).
    /// - Throws: ``PeerJSServerError`` naming the first setting outside the daemon's ranges.
    public init(
        configuration: Configuration = Configuration(),
        eventLoop: (any EventLoop)? = nil,
        eventBuffer: Int = PeerJSServer.defaultEventBuffer,
        logger: Logger = Logger(label: "peerjs"),
        authorize: (@Sendable (Registration) async -> Verdict)? = nil
    ) throws {
        if let problem = configuration.problem { throw PeerJSServerError(description: "PeerJSServer.Configuration: \(problem)") }
        let logger = EscapingLogHandler.wrapping(logger)
        self.logger = logger
        let eventLoop = eventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
        self.eventLoop = eventLoop
        let (events, continuation) = AsyncStream.makeStream(of: PeerEvent.self, bufferingPolicy: .bufferingNewest(max(0, eventBuffer)))
        self.events = events
        self.continuation = continuation
        if eventBuffer <= 0 { continuation.finish() }
        let dropped = DropCounter(logger: logger)
        var policy: EmbeddedBroker.Authorize?
        if let authorize {
            policy = { query in
                let registration = Registration(id: query.id, token: query.token, key: query.key, ip: query.ip, version: query.version)
                switch await authorize(registration) {
                case .allow: return .allow
                case .deny(let reason): return .deny(reason)
                }
            }
        }
        broker = EmbeddedBroker(
            configuration: configuration, loop: eventLoop, logger: logger, authorize: policy,
            onEvent: { event in
                if case .dropped = continuation.yield(event) { dropped.count() }
            })
    }

    /// Serves `channel` as a PeerJS connection from its first byte: HTTP routes under the base
    /// path and the PeerJS WebSocket. Call it on ``eventLoop`` (a channel initializer), before
    /// anything has been read. Throws when the channel is on another loop, the server is shut
    /// down, or the client's address has too many handshakes open (close the channel then).
    public func serve(_ channel: any Channel) throws {
        try serve(channel, since: nil)
    }

    /// ``serve(_:)`` for a connection whose handshake deadline started at `since` (the router's).
    func serve(_ channel: any Channel, since: NIODeadline?) throws {
        do {
            try broker.serve(channel, since: since)
        } catch {
            switch error {
            case .otherEventLoop, .pipeline: logOnce(error.description)
            case .stopped, .handshakeLimit: logger.debug("\(error.description)")
            }
            throw PeerJSServerError(description: error.description)
        }
    }

    private let loggedErrors = Mutex<Set<String>>([])

    /// A set-up mistake (the wrong loop) would otherwise close every PeerJS connection quietly.
    private func logOnce(_ text: String) {
        guard loggedErrors.withLock({ $0.count < 16 && $0.insert(text).inserted }) else { return }
        logger.error("PeerJSServer: \(text)")
    }

    /// Mounts the server at its base path on a connection of the app's own HTTP server: the
    /// first request line decides. Under the base path (`/peerjs`, `/peerjs/…`) this server
    /// takes the connection; otherwise `otherwise` sets up the app's pipeline (its future is
    /// what the app's server would have returned). Either way the bytes read so far are passed
    /// on. Call it on ``eventLoop`` from the channel initializer; the returned future completes
    /// once the first request line has arrived (or fails when the connection ends first).
    ///
    /// A later request on the same keep-alive connection that belongs to the other side gets
    /// `307` to itself with `Connection: close` (from this server; Hummingbird's adapter does the
    /// same for the app), so clients ask again on a new connection.
    ///
    /// Add it before any handler that reads the request (a TLS handler before it is fine). The
    /// future fails at once when called off the channel's loop, or when the base path is `/`
    /// (the PeerJS server would take every request: set `path`, or use ``serve(_:)``).
    public func mount<Other: Sendable>(
        _ channel: any Channel, otherwise: @escaping @Sendable (any Channel) -> EventLoopFuture<Other>
    ) -> EventLoopFuture<Route<Other>> {
        let promise = channel.eventLoop.makePromise(of: Route<Other>.self)
        guard channel.eventLoop.inEventLoop else {
            promise.fail(PeerJSServerError(description: "PeerJSServer.mount is called off the channel's event loop; call it from the channel initializer"))
            return promise.futureResult
        }
        guard configuration.basePath != "/" else {
            logOnce("mount: the base path is /, which would take every request from the app; set configuration.path (e.g. /peerjs)")
            promise.fail(PeerJSServerError(description: "PeerJSServer.mount needs a base path other than /"))
            return promise.futureResult
        }
        do {
            try channel.pipeline.syncOperations.addHandler(
                MountRouter(server: self, otherwise: otherwise, promise: promise,
                            timeoutMs: configuration.handshakeTimeoutMs, maxLineBytes: configuration.maxHeaderBytes))
        } catch {
            promise.fail(error)
        }
        return promise.futureResult
    }

    /// Whether a request target (`/peerjs/peerjs?key=…`) is under this server's base path.
    public func serves(target: some StringProtocol) -> Bool {
        configuration.serves(target: target)
    }

    /// Registered peers and open PeerJS sockets, now.
    public func statistics() async throws -> (registered: Int, connections: Int) {
        try await broker.statistics().get()
    }

    /// Closes every PeerJS socket with `1001 going away` and every connection in its handshake,
    /// refuses new ones, and finishes ``events``. Hummingbird's graceful shutdown closes the
    /// sockets of its own connections too; call this when the app stops.
    public func shutdown() async {
        try? await broker.shutdown().get()
        continuation.finish()
    }
}

/// Why ``PeerJSServer/serve(_:)`` did not take a connection.
public struct PeerJSServerError: Error, CustomStringConvertible {
    public let description: String
}

/// Counts events a slow reader lost and logs them at most once per ``period`` (a reader just
/// slower than the events drops one now and then, and must not cost a log line per event).
private final class DropCounter: Sendable {
    static let period: Duration = .seconds(10)
    private let logger: Logger
    private let state = Mutex<(dropped: Int, lastReport: ContinuousClock.Instant?)>((0, nil))

    init(logger: Logger) {
        self.logger = logger
    }

    func count() {
        let now = ContinuousClock.now
        let report: Int? = state.withLock { state in
            state.dropped += 1
            if let last = state.lastReport, now - last < Self.period { return nil }
            defer { state = (0, now) }
            return state.dropped
        }
        if let report {
            logger.warning("PeerJSServer.events: the reader is behind; \(report) events dropped (the oldest) since the last report; pass eventBuffer: 0 to keep none")
        }
    }
}
