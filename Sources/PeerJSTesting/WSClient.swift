import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// One frame received from the server (continuation frames are reassembled into one text/binary frame).
public enum WSFrame: Sendable, Equatable, CustomStringConvertible {
    /// A text message.
    case text(String)
    /// A binary message.
    case binary([UInt8])
    /// A ping (answered automatically when ``WSClient/autoPong`` is on).
    case ping([UInt8])
    /// A pong.
    case pong([UInt8])
    /// A close frame; `code` is `nil` when the frame carried no status code (the browser then reports 1005).
    case close(code: UInt16?)

    public var description: String {
        switch self {
        case .text(let text): return "text(\(text.count > 300 ? String(text.prefix(300)) + "…" : text))"
        case .binary(let bytes): return "binary(\(bytes.count) bytes)"
        case .ping(let bytes): return "ping(\(bytes.count) bytes)"
        case .pong(let bytes): return "pong(\(bytes.count) bytes)"
        case .close(let code): return "close(\(code.map(String.init) ?? "no code"))"
        }
    }
}

/// How a connection ended, as seen by ``WSClient/waitForClose(timeout:)``.
public struct WSCloseInfo: Sendable, Equatable {
    /// Whether the server sent a close frame before the TCP connection ended.
    public var receivedCloseFrame: Bool
    /// The status code in that close frame, if any.
    public var code: UInt16?
}

/// A refused (non-101) answer to a WebSocket upgrade request.
public struct UpgradeRefusal: Error, Sendable, CustomStringConvertible {
    /// The HTTP status code (e.g. 400).
    public let status: Int
    /// The response headers.
    public let headers: [(String, String)]
    /// The response body.
    public let body: [UInt8]

    public var description: String {
        "HTTP \(status) \(String(decoding: body.prefix(200), as: UTF8.self))"
    }
}

enum WSEvent: Sendable {
    case frame(WSFrame)
    case end(String)
}

/// State shared between the async test code and the event-loop handlers of one connection.
final class WSShared: @unchecked Sendable {
    let inbox = Inbox<WSEvent>()
    let autoPong: Locked<Bool>
    let pingCount = Locked(0)
    let closed = Locked(false)

    init(autoPong: Bool) {
        self.autoPong = Locked(autoPong)
    }
}

/// Pass-through handler at the head end of the pipeline; writes from its context bypass every encoder, which is how
/// ``WSClient/sendRaw(_:)`` puts arbitrary bytes on the TCP connection.
final class RawWriteHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func writeRaw(_ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        guard let context else {
            return MultiThreadedEventLoopGroup.singleton.next().makeFailedFuture(HarnessError("raw writer gone"))
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(buffer), promise: promise)
        return promise.futureResult
    }
}

/// Completes the connect step exactly once: upgraded, refused, or failed.
final class UpgradeOutcome: @unchecked Sendable {
    enum Result: Sendable {
        case upgraded
        case refused(UpgradeRefusal)
    }

    let promise: EventLoopPromise<Result>
    private let done = Locked(false)

    init(promise: EventLoopPromise<Result>) {
        self.promise = promise
    }

    func complete(_ result: Swift.Result<Result, any Error>) {
        let first = done.withLock { value -> Bool in
            defer { value = true }
            return !value
        }
        if first { promise.completeWith(result) }
    }
}

/// Collects a non-upgrade HTTP response (e.g. 400 for a wrong path).
final class UpgradeResponseObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    let outcome: UpgradeOutcome
    var head: HTTPResponseHead?
    var body: [UInt8] = []

    init(outcome: UpgradeOutcome) {
        self.outcome = outcome
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(let buffer):
            body += buffer.readableBytesView
        case .end:
            finish(context: context)
        }
    }

    private func finish(context: ChannelHandlerContext) {
        if let head {
            outcome.complete(
                .success(
                    .refused(
                        UpgradeRefusal(
                            status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) },
                            body: body))))
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if head != nil {
            finish(context: context)
        } else {
            outcome.complete(.failure(HarnessError("connection closed before any answer to the WebSocket upgrade")))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if head != nil { return }  // e.g. the upgrade handler's complaint about a non-101 answer
        outcome.complete(.failure(HarnessError("WebSocket upgrade failed: \(error)")))
        context.close(promise: nil)
    }
}

/// Receives WebSocket frames after the upgrade; answers pings when asked to; records everything in the inbox.
final class WSFrameHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let shared: WSShared
    var fragments: (opcode: WebSocketOpcode, data: [UInt8])?
    var sentClose = false

    init(shared: WSShared) {
        self.shared = shared
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let payload = Array(frame.unmaskedData.readableBytesView)
        switch frame.opcode {
        case .text, .binary:
            if frame.fin {
                deliver(opcode: frame.opcode, payload)
            } else {
                fragments = (frame.opcode, payload)
            }
        case .continuation:
            guard var pending = fragments else { return }
            pending.data += payload
            if frame.fin {
                fragments = nil
                deliver(opcode: pending.opcode, pending.data)
            } else {
                fragments = pending
            }
        case .ping:
            shared.pingCount.withLock { $0 += 1 }
            shared.inbox.push(.frame(.ping(payload)))
            if shared.autoPong.current {
                var buffer = context.channel.allocator.buffer(capacity: payload.count)
                buffer.writeBytes(payload)
                let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: buffer)
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            }
        case .pong:
            shared.inbox.push(.frame(.pong(payload)))
        case .connectionClose:
            let code: UInt16? = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
            shared.inbox.push(.frame(.close(code: code)))
            if !sentClose {
                sentClose = true
                var buffer = context.channel.allocator.buffer(capacity: 2)
                if let code { buffer.writeInteger(code) }
                let reply = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: buffer)
                context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
            }
        default:
            break
        }
    }

    private func deliver(opcode: WebSocketOpcode, _ payload: [UInt8]) {
        if opcode == .text {
            shared.inbox.push(.frame(.text(String(decoding: payload, as: UTF8.self))))
        } else {
            shared.inbox.push(.frame(.binary(payload)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        shared.closed.withLock { $0 = true }
        shared.inbox.push(.end("TCP connection closed"), sticky: true)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        shared.inbox.push(.end("connection error: \(error)"), sticky: true)
        context.close(promise: nil)
    }
}

/// A WebSocket client for tests, built on SwiftNIO (HTTP/1 client upgrade, then the WebSocket frame codec).
///
/// Frames are queued as they arrive and read with bounded waits: ``nextFrame(timeout:)``, ``nextJSON(timeout:)``,
/// ``expectNoFrame(within:)``, ``waitForClose(timeout:)``. Server pings are answered while ``autoPong`` is on.
/// - Parameters:
///   - autoPong: answer pings (default); turn off to simulate a peer that answers nothing.
public final class WSClient: Sendable {
    private let channel: any Channel
    private let shared: WSShared
    private let raw: NIOLoopBound<RawWriteHandler>
    /// A label for messages (the query string used to connect).
    public let label: String

    init(channel: any Channel, shared: WSShared, raw: NIOLoopBound<RawWriteHandler>, label: String) {
        self.channel = channel
        self.shared = shared
        self.raw = raw
        self.label = label
    }

    deinit {
        channel.close(promise: nil)
    }

    /// Whether server pings are answered with pongs.
    public var autoPong: Bool {
        get { shared.autoPong.current }
        set { shared.autoPong.withLock { $0 = newValue } }
    }

    /// How many pings the server sent so far.
    public var pingsReceived: Int { shared.pingCount.current }

    /// Whether the TCP connection has ended.
    public var isClosed: Bool { shared.closed.current }

    /// Opens a WebSocket; throws if the server refuses the upgrade.
    /// - Parameters:
    ///   - host: server address.
    ///   - port: server port.
    ///   - path: the WebSocket path, e.g. `/peerjs`.
    ///   - query: appended raw after `?` (e.g. `key=peerjs&id=a&token=t`), or `nil` for none.
    ///   - autoPong: answer server pings.
    ///   - timeout: bound for TCP connect plus upgrade.
    public static func connect(
        host: String = "127.0.0.1", port: Int, path: String = "/peerjs", query: String? = nil, autoPong: Bool = true,
        timeout: Duration = .seconds(5)
    ) async throws -> WSClient {
        switch try await connectRaw(host: host, port: port, path: path, query: query, autoPong: autoPong, timeout: timeout) {
        case .success(let client): return client
        case .failure(let refusal):
            throw HarnessError("WebSocket upgrade to \(path)?\(query ?? "") refused: \(refusal)")
        }
    }

    /// Opens a WebSocket and reports a refused upgrade (non-101 answer) as a value instead of an error.
    /// - Parameters:
    ///   - host: server address.
    ///   - port: server port.
    ///   - path: the WebSocket path.
    ///   - query: appended raw after `?`, or `nil`.
    ///   - autoPong: answer server pings.
    ///   - timeout: bound for TCP connect plus upgrade.
    public static func connectRaw(
        host: String = "127.0.0.1", port: Int, path: String = "/peerjs", query: String? = nil, autoPong: Bool = true,
        timeout: Duration = .seconds(5)
    ) async throws -> Swift.Result<WSClient, UpgradeRefusal> {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let shared = WSShared(autoPong: autoPong)
        let outcome = UpgradeOutcome(promise: loop.makePromise(of: UpgradeOutcome.Result.self))
        let rawBox = Locked<NIOLoopBound<RawWriteHandler>?>(nil)

        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(Int64(timeout.components.seconds * 1000)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let raw = RawWriteHandler()
                    rawBox.withLock { $0 = NIOLoopBound(raw, eventLoop: channel.eventLoop) }
                    try channel.pipeline.syncOperations.addHandler(raw)
                    let observer = UpgradeResponseObserver(outcome: outcome)
                    let boundObserver = NIOLoopBound(observer, eventLoop: channel.eventLoop)
                    let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 24, automaticErrorHandling: false) {
                        channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(WSFrameHandler(shared: shared))
                            outcome.complete(.success(.upgraded))
                        }
                    }
                    let config: NIOHTTPClientUpgradeConfiguration = (
                        upgraders: [upgrader],
                        completionHandler: { context in
                            context.pipeline.syncOperations.removeHandler(boundObserver.value, promise: nil)
                        }
                    )
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        leftOverBytesStrategy: .forwardBytes, withClientUpgrade: config)
                    try channel.pipeline.syncOperations.addHandler(observer)
                }
            }
        let channel = try await bootstrap.connect(host: host, port: port).get()
        let uri = path + (query.map { "?" + $0 } ?? "")
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)

        let timer = loop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) {
            outcome.complete(.failure(HarnessError("no answer to the WebSocket upgrade of \(uri) within \(timeout)")))
            channel.close(promise: nil)
        }
        let result: UpgradeOutcome.Result
        do {
            result = try await outcome.promise.futureResult.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        timer.cancel()
        switch result {
        case .upgraded:
            guard let raw = rawBox.current else { throw HarnessError("internal: raw writer missing") }
            return .success(WSClient(channel: channel, shared: shared, raw: raw, label: uri))
        case .refused(let refusal):
            channel.close(promise: nil)
            return .failure(refusal)
        }
    }

    // MARK: Sending

    private func send(opcode: WebSocketOpcode, _ bytes: some Sequence<UInt8>, fin: Bool = true) async throws {
        var buffer = channel.allocator.buffer(capacity: 64)
        buffer.writeBytes(Array(bytes))
        let frame = WebSocketFrame(fin: fin, opcode: opcode, maskKey: .random(), data: buffer)
        try await channel.writeAndFlush(frame)
    }

    /// Sends a text frame.
    /// - Parameters:
    ///   - text: the message.
    public func sendText(_ text: String) async throws {
        try await send(opcode: .text, Array(text.utf8))
    }

    /// Sends a JSON value as one text frame.
    /// - Parameters:
    ///   - value: the message.
    public func sendJSON(_ value: JSONValue) async throws {
        try await sendText(value.jsonString)
    }

    /// Sends a binary frame.
    /// - Parameters:
    ///   - bytes: the message.
    public func sendBinary(_ bytes: [UInt8]) async throws {
        try await send(opcode: .binary, bytes)
    }

    /// Sends a ping frame.
    /// - Parameters:
    ///   - bytes: application data.
    public func sendPing(_ bytes: [UInt8] = []) async throws {
        try await send(opcode: .ping, bytes)
    }

    /// Sends a close frame with `code` (no close of the TCP connection).
    /// - Parameters:
    ///   - code: the status code, or `nil` for an empty close frame.
    public func sendClose(code: UInt16? = 1000) async throws {
        var bytes: [UInt8] = []
        if let code { bytes = [UInt8(code >> 8), UInt8(code & 0xff)] }
        try await send(opcode: .connectionClose, bytes)
    }

    /// Writes `bytes` straight to the TCP connection, bypassing the frame encoder (for malformed frames).
    /// - Parameters:
    ///   - bytes: raw bytes.
    public func sendRaw(_ bytes: [UInt8]) async throws {
        let raw = self.raw
        let buffer = ByteBuffer(bytes: bytes)
        try await channel.eventLoop.flatSubmit { raw.value.writeRaw(buffer) }.get()
    }

    // MARK: Receiving

    /// The next frame of any kind except pongs; throws on timeout or when the connection has ended.
    /// - Parameters:
    ///   - timeout: bound of the wait.
    public func nextFrame(timeout: Duration = .seconds(5)) async throws -> WSFrame {
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, let event = await shared.inbox.pop(timeout: remaining) else {
                throw HarnessError("[\(label)] no frame within \(timeout)")
            }
            switch event {
            case .frame(.pong): continue
            case .frame(let frame): return frame
            case .end(let why): throw HarnessError("[\(label)] connection ended while waiting for a frame (\(why))")
            }
        }
    }

    /// The next text or binary message, skipping pings; throws on timeout, close frame, or end of connection.
    /// - Parameters:
    ///   - timeout: bound of the wait.
    public func nextMessage(timeout: Duration = .seconds(5)) async throws -> WSFrame {
        let deadline = ContinuousClock.now + timeout
        while true {
            let frame = try await nextFrame(timeout: max(deadline - ContinuousClock.now, .milliseconds(1)))
            switch frame {
            case .ping, .pong: continue
            case .close(let code):
                throw HarnessError("[\(label)] server closed (close frame, code \(code.map(String.init) ?? "none")) while a message was expected")
            case .text, .binary: return frame
            }
        }
    }

    /// The next message parsed as JSON (text frames, or binary frames holding UTF-8 JSON).
    /// - Parameters:
    ///   - timeout: bound of the wait.
    public func nextJSON(timeout: Duration = .seconds(5)) async throws -> JSONValue {
        let frame = try await nextMessage(timeout: timeout)
        let bytes: [UInt8]
        switch frame {
        case .text(let text): bytes = Array(text.utf8)
        case .binary(let data): bytes = data
        default: bytes = []
        }
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw HarnessError("[\(label)] message is not JSON: \(frame)")
        }
    }

    /// Asserts that no message, close frame or end of connection arrives within `within` (pings and pongs do not
    /// count); throws, naming what arrived, otherwise. Keep these short: every one costs wall-clock time.
    /// - Parameters:
    ///   - within: how long to watch.
    public func expectNoFrame(within: Duration = .milliseconds(250)) async throws {
        let deadline = ContinuousClock.now + within
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, let event = await shared.inbox.pop(timeout: remaining) else { return }
            switch event {
            case .frame(.ping), .frame(.pong): continue
            case .frame(let frame): throw HarnessError("[\(label)] expected nothing within \(within), got \(frame)")
            case .end(let why): throw HarnessError("[\(label)] expected nothing within \(within), but the connection ended (\(why))")
            }
        }
    }

    /// Waits until the server closes the connection (close frame and/or end of TCP), skipping any messages;
    /// throws if it is still open after `timeout`.
    /// - Parameters:
    ///   - timeout: bound of the wait.
    @discardableResult
    public func waitForClose(timeout: Duration = .seconds(5)) async throws -> WSCloseInfo {
        let deadline = ContinuousClock.now + timeout
        var info = WSCloseInfo(receivedCloseFrame: false, code: nil)
        var skipped: [WSFrame] = []
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, let event = await shared.inbox.pop(timeout: remaining) else {
                if info.receivedCloseFrame { return info }  // close frame seen, TCP end still pending: good enough
                throw HarnessError("[\(label)] still open \(timeout) later (skipped: \(skipped))")
            }
            switch event {
            case .frame(.close(let code)):
                info = WSCloseInfo(receivedCloseFrame: true, code: code)
                // Give the server a moment to end TCP after the close handshake, but do not require it.
                let tail = min(deadline - ContinuousClock.now, .seconds(1))
                if tail > .zero, case .end = await shared.inbox.pop(timeout: tail) { return info }
                return info
            case .frame(let frame): skipped.append(frame)
            case .end: return info
            }
        }
    }

    /// Closes cleanly: a close frame (1000), a short wait for the server's answer, then the TCP connection.
    public func close() async {
        if !isClosed {
            try? await sendClose(code: 1000)
            let deadline = ContinuousClock.now + .seconds(1)
            while !isClosed && ContinuousClock.now < deadline {
                guard let event = await shared.inbox.pop(timeout: deadline - ContinuousClock.now) else { break }
                if case .end = event { break }
            }
        }
        try? await channel.close()
    }

    /// Drops the TCP connection without a close frame.
    public func abort() async {
        try? await channel.close()
    }
}
