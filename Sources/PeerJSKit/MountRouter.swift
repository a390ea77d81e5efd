import NIOCore

/// The first handler of a connection of the app's server that ``PeerJSServer`` is mounted on:
/// it holds the bytes until the first request line is complete, then gives the connection to
/// the PeerJS server (a target under its base path) or to the app's pipeline, passes the bytes
/// on, and leaves. A client that sends no complete line within the handshake timeout is closed;
/// a line longer than `maxLineBytes` goes to the app, whose HTTP parser refuses it.
final class MountRouter<Other: Sendable>: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let server: PeerJSServer
    private let otherwise: @Sendable (any Channel) -> EventLoopFuture<Other>
    private let promise: EventLoopPromise<PeerJSServer.Route<Other>>
    private let timeoutMs: Int64
    private let maxLineBytes: Int
    private var buffered: ByteBuffer?
    private var scanned = 0
    private var decided = false
    private var settled = false
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

    func handlerAdded(context: ChannelHandlerContext) {
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
        let bytes = buffered!
        let lineEnd = bytes.readableBytesView.dropFirst(scanned).firstIndex(of: UInt8(ascii: "\n"))
        scanned = bytes.readableBytes
        if lineEnd == nil, bytes.readableBytes < maxLineBytes { return }
        decide(target: lineEnd.map { Self.target(of: bytes.readableBytesView[..<$0]) } ?? nil, context: context)
    }

    /// `GET /peerjs/peerjs?key=x HTTP/1.1` → `/peerjs/peerjs?key=x`; nil when it is no request line.
    static func target(of line: ByteBufferView.SubSequence) -> Substring? {
        let words = line.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: false)
        guard words.count == 3, !words[1].isEmpty else { return nil }
        return Substring(decoding: words[1], as: UTF8.self)
    }

    private func decide(target: Substring?, context: ChannelHandlerContext) {
        decided = true
        timer?.cancel()
        timer = nil
        if let target, server.serves(target: target) {
            do {
                try server.serve(context.channel)
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
                router.settle(.success(.other(value)))
                router.release(context)
            case .failure(let error):
                router.settle(.failure(error))
                context.close(promise: nil)
            }
        }
    }

    /// Passes on what was read and leaves the pipeline.
    private func release(_ context: ChannelHandlerContext) {
        if let bytes = buffered, bytes.readableBytes > 0 {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(bytes))
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

    /// Before the decision a half-close or the server's shutdown ends the connection (nobody
    /// else would answer it); after it, the events are the new owner's.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard !decided, event is ChannelShouldQuiesceEvent || event as? ChannelEvent == .inputClosed else {
            return context.fireUserInboundEventTriggered(event)
        }
        context.close(promise: nil)
    }
}
