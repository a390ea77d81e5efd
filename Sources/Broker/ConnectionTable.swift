import Logging
import NIOCore
import NIOWebSocket
import PeerProtocol

/// The broker's side of `PeerTransport`: the open WebSocket channels by connection id, so the
/// engine can deliver, ping and close without knowing about NIO. Lives on the broker's loop.
final class ConnectionTable: PeerTransport {
    struct Connection {
        var channel: any Channel
        var address: String
        /// When its upgrade request was answered (NIO's uptime clock), for the registration latency;
        /// 0 without metrics (the clock is not read then).
        var since: UInt64
    }

    private var connections: [ConnectionID: Connection] = [:]
    private var nextID: UInt64 = 0
    /// Channels written to since the last `flush()`: one writev per destination per read burst
    /// instead of one per message (the relay's largest cost was a syscall per message).
    private var unflushed: [any Channel] = []
    private let logger: Logger
    /// Also told of every peer event (the auth helper's hooks), after the log line. Each event
    /// carries all it needs (id, key, address), so nothing depends on when this is told.
    var forwardEvent: ((PeerEvent) -> Void)?
    /// Clustered: where frames for peers on other instances and released ids go (the cluster
    /// role's client); nil: not clustered, nothing leaves this instance.
    var cluster: ClusterClient?
    /// With `--metrics-port`: told how long each registration took.
    var metrics: BrokerMetrics?

    init(logger: Logger) {
        self.logger = logger
    }

    var count: Int { connections.count }

    func contains(_ id: ConnectionID) -> Bool { connections[id] != nil }

    func add(_ channel: any Channel, address: String) -> ConnectionID {
        nextID += 1
        let id = ConnectionID(nextID)
        connections[id] = Connection(channel: channel, address: address, since: metrics == nil ? 0 : NIODeadline.now().uptimeNanoseconds)
        return id
    }

    /// Forgets a connection whose channel has gone; returns whether it was still known.
    @discardableResult
    func remove(_ id: ConnectionID) -> Bool {
        connections.removeValue(forKey: id) != nil
    }

    /// False when the channel holds `--output_limit` bytes its client has not read (it is not
    /// writable), including for the frame that brings it there: the engine then drops the peer
    /// and tells the sender (PROTOCOL.md §7.4, 34) at once, rather than leaving the frame to be
    /// lost with the connection when ``OutputLimit`` closes it.
    func send(_ frame: UnsafeRawBufferPointer, to connection: ConnectionID) -> Bool {
        guard let channel = connections[connection]?.channel, channel.isActive, channel.isWritable else {
            return false
        }
        channel.write(ServerFrame.make(.text, payload: frame, allocator: channel.allocator), promise: nil)
        unflushed.append(channel)
        return channel.isWritable
    }

    /// Flushes every channel written to since the last call. The broker calls it at the end of
    /// each unit of work: a read burst, a registration, a timer tick, a close.
    func flush() {
        guard !unflushed.isEmpty else { return }
        let channels = unflushed
        unflushed.removeAll(keepingCapacity: true)
        if channels.count == 1 {
            channels[0].flush()
            return
        }
        var seen = Set<ObjectIdentifier>()
        for channel in channels where seen.insert(ObjectIdentifier(channel)).inserted {
            channel.flush()
        }
    }

    /// Closes with an empty close frame: PeerJS servers close without a status code (1005).
    /// Frames written before it go out first (the close frame's flush carries them).
    func close(_ connection: ConnectionID) {
        guard let channel = connections.removeValue(forKey: connection)?.channel else { return }
        Self.closeGently(channel, code: nil)
    }

    /// Written, not flushed: the tick that pings flushes after it (a flush inside the engine's
    /// loop over its sessions could complete a pending close and re-enter it). A channel past
    /// its output limit gets no ping: it is being closed.
    func forward(_ frame: UnsafeRawBufferPointer, key: String, to id: String, from source: String, at instance: String) -> Bool {
        cluster?.forward(frame, key: key, to: id, from: source, at: instance) ?? false
    }

    func released(id: String, key: String) {
        cluster?.release(id: id, key: key)
    }

    func hasPendingOutput(_ connection: ConnectionID) -> Bool {
        guard let channel = connections[connection]?.channel else { return false }
        return ((try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0) > 0
    }

    func ping(_ connection: ConnectionID) {
        guard let channel = connections[connection]?.channel, channel.isWritable else { return }
        channel.write(ServerFrame.header(.ping, count: 0, allocator: channel.allocator), promise: nil)
        unflushed.append(channel)
    }

    func peerEvent(_ event: PeerEvent) {
        switch event {
        case .connected(let id, let key, let connection, _):
            if let metrics, let since = connections[connection]?.since, since > 0 {
                metrics.registered(after: Int64(NIODeadline.now().uptimeNanoseconds) - Int64(since))
            }
            logger.info("Client connected: \(id)", metadata: ["key": "\(key)", "address": "\(address(of: connection))"])
        case .disconnected(let id, let key, _, _, let reason):
            logger.info("Client disconnected: \(id)", metadata: ["key": "\(key)", "reason": "\(reason.rawValue)"])
        }
        forwardEvent?(event)
    }

    func address(of connection: ConnectionID) -> String {
        connections[connection]?.address ?? "?"
    }

    /// Closes every connection with `1001 going away` (drain on SIGTERM).
    func closeAll() -> [EventLoopFuture<Void>] {
        let channels = connections.values.map(\.channel)
        connections.removeAll()
        return channels.map { Self.closeGently($0, code: .goingAway) }
    }

    @discardableResult
    static func closeGently(_ channel: any Channel, code: WebSocketErrorCode?) -> EventLoopFuture<Void> {
        var data = channel.allocator.buffer(capacity: 2)
        if let code { data.write(webSocketErrorCode: code) }
        return close(channel, after: ServerFrame.make(.connectionClose, payload: data, allocator: channel.allocator))
    }

    /// How long a connection being closed may take to accept its close frame (and what was
    /// written before it); a client that does not read is then closed without it.
    static let closeGrace = TimeAmount.seconds(2)

    /// Writes `frame` (a close frame) and closes once it is out, or after ``closeGrace``.
    @discardableResult
    static func close(_ channel: any Channel, after frame: ByteBuffer) -> EventLoopFuture<Void> {
        let deadline = channel.eventLoop.scheduleTask(in: closeGrace) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in deadline.cancel() }
        return channel.writeAndFlush(frame).flatMap { channel.close() }.recover { _ in channel.close(promise: nil) }
    }
}
