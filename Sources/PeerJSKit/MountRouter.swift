import NIOCore

/// The first handler of a connection of the app's server that ``PeerJSServer`` is mounted on:
/// it holds the bytes until the first request line is complete, then gives the connection to
/// the PeerJS server (a target under its base path) or to the app's pipeline, passes the bytes
/// on, and leaves. A client that sends no complete line within the handshake timeout is closed;
/// a line longer than `maxLineBytes` is decided by the part of its target read (under the base
/// path: the PeerJS server, which answers `431`). Empty lines before the request line are
/// skipped (RFC 9112 §2.2). An absolute-form target (`http://host/peerjs/…`, which only proxies
/// are sent) goes to the app, like anything that is not origin-form under the base path.
/// Until the new owner has the bytes it sees nothing else of the connection: a half-close, an
/// error or the server's shutdown closes it.
final class MountRouter<Other: Sendable>: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let server: PeerJSServer
    private let otherwise: @Sendable (any Channel) -> EventLoopFuture<Other>
    private let promise: EventLoopPromise<PeerJSServer.Route<Other>>
    private let timeoutMs: Int64
    private let maxLineBytes: Int
    private var buffered: ByteBuffer?
    /// Bytes of the buffer already looked at for a line feed.
    private var scanned = 0
    /// Empty-line bytes (CR, LF) known to lead the buffer.
    private var leading = 0
    private var decided = false
    /// The new owner has the connection (and the bytes): events go to it from now on.
    private var released = false
    /// The route's promise is completed.
    private(set) var settled = false
    private var timer: Scheduled<Void>?

    init(
        server: PeerJSServer, otherwise: @escaping @Sendable (any Channel) -> EventLoopFuture<Other>,
        promise: EventLoopPromise<PeerJSServer.Route<Other>>, timeoutMs: Int64, maxLineBytes: Int
    ) {
        self.server = server
        self.otherwise = otherwise
        self.promise = promise
        self.timeoutMs = timeoutMs
        self.maxLineBytes = maxLineBytes
    }

    /// When the connection reached this handler: the PeerJS handshake deadline counts from here.
    private var started = NIODeadline.uptimeNanoseconds(0)

    func handlerAdded(context: ChannelHandlerContext) {
        started = context.eventLoop.now
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: .milliseconds(timeoutMs)) { bound.value.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        settle(.failure(ChannelError.ioOnClosedChannel))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            // A copy, not NIO's receive buffer (which it would otherwise keep for this connection).
            buffered = context.channel.allocator.buffer(capacity: incoming.readableBytes)
        }
        buffered!.writeBuffer(&incoming)
        guard !decided else {
            // Waiting for the app's pipeline: keep what arrives, within bounds.
            if buffered!.readableBytes > 4 * maxLineBytes { context.close(promise: nil) }
            return
        }
        let view = buffered!.readableBytesView
        // Empty lines before the request line are skipped (they count toward the limit); each
        // byte is looked at once, however the client splits its sends.
        while leading < view.count, case let byte = view[view.startIndex + leading], byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") {
            leading += 1
        }
        let start = view.startIndex + leading
        let lineEnd = view[max(start, view.startIndex + scanned)...].firstIndex(of: UInt8(ascii: "\n"))
        scanned = view.count
        if lineEnd == nil, view.count < maxLineBytes { return }
        decide(target: Self.target(of: view[start..<(lineEnd ?? view.endIndex)], complete: lineEnd != nil), context: context)
    }

    /// `GET /peerjs/peerjs?key=x HTTP/1.1` → `/peerjs/peerjs?key=x`; with `complete` false (a
    /// line over the limit), the part of the target read. Nil when it is no request line.
    static func target(of line: ByteBufferView.SubSequence, complete: Bool) -> Substring? {
        let words = line.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: false)
        guard words.count == (complete ? 3 : words.count), words.count >= 2, !words[1].isEmpty else { return nil }
        return Substring(decoding: words[1], as: UTF8.self)
    }

    private func decide(target: Substring?, context: ChannelHandlerContext) {
        decided = true
        if let target, server.serves(target: target) {
            do {
                try server.serve(context.channel, since: started)
            } catch {
                settle(.failure(error))
                return context.close(promise: nil)
            }
            settle(.success(.peerJS))
            return release(context)
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        otherwise(context.channel).hop(to: context.eventLoop).whenComplete { result in
            let (router, context) = bound.value
            switch result {
            case .success(let value):
                // The connection may have ended while the app set up its pipeline.
                guard !router.settled, context.channel.isActive else {
                    router.settle(.failure(ChannelError.ioOnClosedChannel))
                    return context.close(promise: nil)
                }
                router.settle(.success(.other(value)))
                router.release(context)
            case .failure(let error):
                router.settle(.failure(error))
                context.close(promise: nil)
            }
        }
    }

    /// Passes on what was read (with the read-complete that NIO's async channels wait for) and
    /// leaves the pipeline. The new owner's own deadlines run from here.
    private func release(_ context: ChannelHandlerContext) {
        released = true
        timer?.cancel()
        timer = nil
        if let bytes = buffered, bytes.readableBytes > 0 {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        buffered = nil
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func settle(_ result: Result<PeerJSServer.Route<Other>, any Error>) {
        guard !settled else { return }
        settled = true
        promise.completeWith(result)
    }

    func channelInactive(context: ChannelHandlerContext) {
        settle(.failure(ChannelError.eof))
        context.fireChannelInactive()
    }

    /// The read-complete of bytes held here is fired with them, at release.
    func channelReadComplete(context: ChannelHandlerContext) {
        if released { context.fireChannelReadComplete() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard released else { return context.close(promise: nil) }
        context.fireErrorCaught(error)
    }

    /// Until the new owner has the bytes, a half-close or the server's shutdown ends the
    /// connection (nobody would answer it, and the owner must not see them before its request).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard !released, event is ChannelShouldQuiesceEvent || event as? ChannelEvent == .inputClosed else {
            return context.fireUserInboundEventTriggered(event)
        }
        context.close(promise: nil)
    }
}
