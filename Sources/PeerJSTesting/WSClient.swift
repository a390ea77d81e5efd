import Foundation
import NIOCore
import NIOPosix
public import NIOSSL
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

    /// A caller that gave up waiting (timeout) leaves the promise behind: fail it rather than leak it.
    deinit {
        complete(.failure(HarnessError("the connection ended before the WebSocket upgrade finished")))
    }

    func complete(_ result: Swift.Result<Result, any Error>) {
        let first = done.withLock { value -> Bool in
            defer { value = true }
            return !value
        }
        if first { promise.completeWith(result) }
    }
}

/// Performs the client side of the WebSocket opening handshake on raw bytes, then installs the NIOWebSocket frame
/// codec behind itself and forwards every byte (including those that arrived with the 101 response).
///
/// NIO's `NIOHTTPClientUpgradeHandler` is not used: its HTTP decoder drops the bytes that follow the 101 response
/// when the server has already closed (101 + ERROR + close in one burst, which is exactly what a PeerJS server sends
/// on a refused registration), and the harness must see those frames.
final class HandshakeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum State {
        case awaitingHead
        case refusedBody(status: Int, headers: [(String, String)], contentLength: Int?)
        case upgraded
        case done
    }

    let outcome: UpgradeOutcome
    let requestKey: String
    let shared: WSShared
    var state = State.awaitingHead
    var buffer: [UInt8] = []

    init(outcome: UpgradeOutcome, requestKey: String, shared: WSShared) {
        self.outcome = outcome
        self.requestKey = requestKey
        self.shared = shared
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let incoming = unwrapInboundIn(data)
        switch state {
        case .upgraded:
            context.fireChannelRead(data)
            return
        case .done:
            return
        case .awaitingHead, .refusedBody:
            buffer += incoming.readableBytesView
        }
        process(context: context, eof: false)
    }

    private func process(context: ChannelHandlerContext, eof: Bool) {
        if case .awaitingHead = state {
            guard let end = headEnd() else {
                if eof {
                    outcome.complete(
                        .failure(HarnessError("connection closed before a complete answer to the WebSocket upgrade"))
                    )
                }
                return
            }
            let headText = String(decoding: buffer[0..<end], as: UTF8.self)
            buffer.removeFirst(end + 4)
            var lines = headText.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, let status = Int(parts[1]) else {
                outcome.complete(.failure(HarnessError("bad HTTP status line: \(statusLine)")))
                state = .done
                context.close(promise: nil)
                return
            }
            let headers: [(String, String)] = lines.compactMap { line in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
            if status == 101 {
                let expected = webSocketAccept(for: requestKey)
                guard header("upgrade")?.lowercased() == "websocket", header("sec-websocket-accept") == expected else {
                    outcome.complete(
                        .failure(
                            HarnessError(
                                "101 without a valid WebSocket handshake (Upgrade: \(header("upgrade") ?? "-"), Sec-WebSocket-Accept: \(header("sec-websocket-accept") ?? "-"), expected \(expected))"
                            )
                        )
                    )
                    state = .done
                    context.close(promise: nil)
                    return
                }
                state = .upgraded
                do {
                    try context.pipeline.syncOperations.addHandlers(
                        [
                            WebSocketFrameEncoder(), ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 24)),
                            WSFrameHandler(shared: shared),
                        ],
                        position: .after(self)
                    )
                } catch {
                    outcome.complete(.failure(error))
                    context.close(promise: nil)
                    return
                }
                outcome.complete(.success(.upgraded))
                if !buffer.isEmpty {
                    let rest = context.channel.allocator.buffer(bytes: buffer)
                    buffer = []
                    context.fireChannelRead(wrapInboundOut(rest))
                    context.fireChannelReadComplete()
                }
                return
            }
            let length = header("content-length").flatMap { Int($0) }
            state = .refusedBody(status: status, headers: headers, contentLength: length)
        }
        if case .refusedBody(let status, let headers, let length) = state {
            if let length, buffer.count >= length {
                finishRefusal(context: context, status: status, headers: headers, body: Array(buffer.prefix(length)))
            } else if eof || length == nil && buffer.isEmpty && status >= 100 && (status == 204 || status == 304) {
                finishRefusal(context: context, status: status, headers: headers, body: buffer)
            }
        }
    }

    private func finishRefusal(context: ChannelHandlerContext, status: Int, headers: [(String, String)], body: [UInt8])
    {
        state = .done
        outcome.complete(.success(.refused(UpgradeRefusal(status: status, headers: headers, body: body))))
        context.close(promise: nil)
    }

    private func headEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for index in 0...(buffer.count - 4)
        where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
            return index
        }
        return nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .awaitingHead, .refusedBody:
            process(context: context, eof: true)
            outcome.complete(
                .failure(HarnessError("connection closed before a complete answer to the WebSocket upgrade"))
            )
        case .upgraded, .done:
            break
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .upgraded:
            context.fireErrorCaught(error)
        default:
            outcome.complete(.failure(HarnessError("WebSocket handshake failed: \(error)")))
            context.close(promise: nil)
        }
    }
}

/// `base64(SHA-1(key + GUID))`, the expected `Sec-WebSocket-Accept` (RFC 6455 §4.2.2).
func webSocketAccept(for key: String) -> String {
    Data(sha1(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
}

/// SHA-1 (FIPS 180-4), only for checking the handshake.
func sha1(_ message: [UInt8]) -> [UInt8] {
    var h: [UInt32] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0]
    var data = message
    let bitLength = UInt64(message.count) * 8
    data.append(0x80)
    while data.count % 64 != 56 { data.append(0) }
    for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8((bitLength >> UInt64(shift)) & 0xff)) }
    func rotl(_ x: UInt32, _ n: UInt32) -> UInt32 { (x << n) | (x >> (32 - n)) }
    var w = [UInt32](repeating: 0, count: 80)
    for chunk in stride(from: 0, to: data.count, by: 64) {
        for i in 0..<16 {
            let b = chunk + 4 * i
            w[i] = UInt32(data[b]) << 24 | UInt32(data[b + 1]) << 16 | UInt32(data[b + 2]) << 8 | UInt32(data[b + 3])
        }
        for i in 16..<80 { w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1) }
        var (a, b, c, d, e) = (h[0], h[1], h[2], h[3], h[4])
        for i in 0..<80 {
            let (f, k): (UInt32, UInt32)
            switch i {
            case 0..<20: (f, k) = ((b & c) | (~b & d), 0x5A82_7999)
            case 20..<40: (f, k) = (b ^ c ^ d, 0x6ED9_EBA1)
            case 40..<60: (f, k) = ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC)
            default: (f, k) = (b ^ c ^ d, 0xCA62_C1D6)
            }
            let temp = rotl(a, 5) &+ f &+ e &+ k &+ w[i]
            (e, d, c, b, a) = (d, c, rotl(b, 30), a, temp)
        }
        h[0] = h[0] &+ a
        h[1] = h[1] &+ b
        h[2] = h[2] &+ c
        h[3] = h[3] &+ d
        h[4] = h[4] &+ e
    }
    return h.flatMap { word in (0..<4).map { UInt8((word >> (24 - 8 * UInt32($0))) & 0xff) } }
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

/// The one WebSocket client of the tests (`ws://` and, with a TLS configuration, `wss://`), built on SwiftNIO: an
/// opening handshake on raw bytes (see `HandshakeHandler`), then NIOWebSocket's frame encoder and decoder.
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
    ///   - tls: the client's TLS configuration for `wss://` (the server name checked is `localhost`), or nil.
    ///   - timeout: bound for TCP connect plus upgrade.
    public static func connect(
        host: String = "127.0.0.1",
        port: Int,
        path: String = "/peerjs",
        query: String? = nil,
        autoPong: Bool = true,
        tls: TLSConfiguration? = nil,
        timeout: Duration = .seconds(5)
    ) async throws -> WSClient {
        switch try await connectRaw(
            host: host,
            port: port,
            path: path,
            query: query,
            autoPong: autoPong,
            tls: tls,
            timeout: timeout
        ) {
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
    ///   - tls: the client's TLS configuration for `wss://` (the server name checked is `localhost`), or nil.
    ///   - timeout: bound for TCP connect plus upgrade.
    public static func connectRaw(
        host: String = "127.0.0.1",
        port: Int,
        path: String = "/peerjs",
        query: String? = nil,
        autoPong: Bool = true,
        tls: TLSConfiguration? = nil,
        timeout: Duration = .seconds(5)
    ) async throws -> Swift.Result<WSClient, UpgradeRefusal> {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let shared = WSShared(autoPong: autoPong)
        let outcome = UpgradeOutcome(promise: loop.makePromise(of: UpgradeOutcome.Result.self))
        let rawBox = Locked<NIOLoopBound<RawWriteHandler>?>(nil)

        let requestKey = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let tlsContext = try tls.map { try NIOSSLContext(configuration: $0) }

        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(Int64(timeout.components.seconds * 1000)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tlsContext, serverHostname: "localhost"))
                    }
                    let raw = RawWriteHandler()
                    rawBox.withLock { $0 = NIOLoopBound(raw, eventLoop: channel.eventLoop) }
                    try channel.pipeline.syncOperations.addHandler(raw)
                    try channel.pipeline.syncOperations.addHandler(
                        HandshakeHandler(outcome: outcome, requestKey: requestKey, shared: shared)
                    )
                }
            }
        let channel = try await bootstrap.connect(host: host, port: port).get()
        let uri = path + (query.map { "?" + $0 } ?? "")
        let request =
            "GET \(uri) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(requestKey)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        channel.writeAndFlush(ByteBuffer(string: request), promise: nil)

        let timer = loop.scheduleTask(
            in: .nanoseconds(
                Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
            )
        ) {
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

    /// The next frame of any kind, pongs included; throws on timeout or when the connection has ended.
    /// - Parameters:
    ///   - timeout: bound of the wait.
    public func nextFrameIncludingPongs(timeout: Duration = .seconds(5)) async throws -> WSFrame {
        guard let event = await shared.inbox.pop(timeout: timeout) else {
            throw HarnessError("[\(label)] no frame within \(timeout)")
        }
        switch event {
        case .frame(let frame): return frame
        case .end(let why): throw HarnessError("[\(label)] connection ended while waiting for a frame (\(why))")
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
                throw HarnessError(
                    "[\(label)] server closed (close frame, code \(code.map(String.init) ?? "none")) while a message was expected"
                )
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
            case .end(let why):
                throw HarnessError("[\(label)] expected nothing within \(within), but the connection ended (\(why))")
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
