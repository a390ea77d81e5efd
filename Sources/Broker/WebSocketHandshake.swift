import Crypto
import FoundationEssentials
import NIOCore
import NIOHTTP1
import NIOWebSocket
import PeerProtocol

/// A client's WebSocket opening handshake (RFC 6455 §4.2.1), read straight from the request
/// bytes. It exists because NIO's HTTP pipeline and upgrader cost most of the broker's time per
/// connection (BENCHMARKS.md, "connect"); a request this reader does not accept in full goes to
/// NIO's HTTP pipeline unchanged, which answers it as before.
struct WebSocketUpgradeRequest: Equatable {
    /// The request target as sent: path and query.
    var target: Substring
    var key: String
    /// Every `X-Forwarded-For` value, joined with commas in the order the headers came.
    var forwardedFor: String?

    var path: Substring { target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0] }
    var query: Substring { target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).dropFirst().first ?? "" }

    /// Reads a request head (everything before the blank line). Nil unless it is a plain
    /// `GET … HTTP/1.1` with `Upgrade: websocket`, a `Connection` header naming `upgrade`,
    /// exactly one `Sec-WebSocket-Key`, exactly one `Sec-WebSocket-Version: 13`, no body and
    /// no folded or malformed header line.
    static func parse(_ head: UnsafeRawBufferPointer) -> WebSocketUpgradeRequest? {
        var lines = LineReader(bytes: head)
        guard let requestLine = lines.next(), requestLine.count > 14,
            requestLine.starts(with: "GET /".utf8), requestLine.suffix(9).elementsEqual(" HTTP/1.1".utf8)
        else { return nil }
        let targetBytes = requestLine.dropFirst(4).dropLast(9)
        guard targetBytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }

        var upgrade = false, connectionUpgrade = false
        var key: String?, keyCount = 0, versionCount = 0, version13 = false
        var forwardedFor: String?
        while let line = lines.next() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex,
                line[line.startIndex..<colon].allSatisfy(Self.isTokenByte)
            else { return nil }  // also refuses obs-fold (a line starting with a space)
            let name = line[line.startIndex..<colon]
            var value = line[(colon + 1)...]
            while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
            while let last = value.last, last == 0x20 || last == 0x09 { value = value.dropLast() }
            guard value.allSatisfy({ $0 >= 0x20 || $0 == 0x09 }) else { return nil }
            switch name.count {
            case 7 where Self.equalsLowercased(name, "upgrade"):
                guard !upgrade else { return nil }
                upgrade = Self.listContains(value, "websocket")
                guard upgrade else { return nil }
            case 10 where Self.equalsLowercased(name, "connection"):
                connectionUpgrade = connectionUpgrade || Self.listContains(value, "upgrade")
            case 17 where Self.equalsLowercased(name, "sec-websocket-key"):
                keyCount += 1
                key = String(decoding: value, as: UTF8.self)
            case 21 where Self.equalsLowercased(name, "sec-websocket-version"):
                versionCount += 1
                version13 = value.elementsEqual("13".utf8)
            case 14 where Self.equalsLowercased(name, "content-length"):
                guard value.elementsEqual("0".utf8) else { return nil }
            case 17 where Self.equalsLowercased(name, "transfer-encoding"):
                return nil
            case 15 where Self.equalsLowercased(name, "x-forwarded-for"):
                let entry = String(decoding: value, as: UTF8.self)
                forwardedFor = forwardedFor.map { $0 + "," + entry } ?? entry
            default:
                continue
            }
        }
        guard !lines.malformed, upgrade, connectionUpgrade, keyCount == 1, let key, !key.isEmpty, versionCount == 1, version13 else {
            return nil
        }
        return WebSocketUpgradeRequest(
            target: Substring(String(decoding: targetBytes, as: UTF8.self)), key: key, forwardedFor: forwardedFor)
    }

    /// `Sec-WebSocket-Accept`: base64(SHA-1(key + the RFC's GUID)).
    static func acceptValue(for key: String) -> String {
        Data(Insecure.SHA1.hash(data: Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
    }

    /// The `101 Switching Protocols` response for `key`.
    static func response(for key: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        allocator.buffer(
            string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "
                + acceptValue(for: key) + "\r\nConnection: upgrade\r\n\r\n")
    }

    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    private static func equalsLowercased(_ bytes: Slice<UnsafeRawBufferPointer>, _ lower: StaticString) -> Bool {
        guard bytes.count == lower.utf8CodeUnitCount else { return false }
        return zip(bytes, UnsafeBufferPointer(start: lower.utf8Start, count: lower.utf8CodeUnitCount)).allSatisfy {
            ($0 | 0x20) == $1 || $0 == $1
        }
    }

    /// Whether the comma-separated `list` holds `token` (ASCII case-insensitive).
    private static func listContains(_ list: Slice<UnsafeRawBufferPointer>, _ token: StaticString) -> Bool {
        var start = list.startIndex
        while start <= list.endIndex {
            let end = list[start...].firstIndex(of: UInt8(ascii: ",")) ?? list.endIndex
            var item = list[start..<end]
            while let first = item.first, first == 0x20 || first == 0x09 { item = item.dropFirst() }
            while let last = item.last, last == 0x20 || last == 0x09 { item = item.dropLast() }
            if equalsLowercased(item, token) { return true }
            start = end + 1
        }
        return false
    }

    /// Splits a head into its CRLF-terminated lines (the last needs no CRLF). A CR that is not
    /// followed by LF ends the reading and sets `malformed`: a bare CR is no line end (a lenient
    /// proxy might not split there, so taking it for one would let headers be smuggled).
    private struct LineReader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0
        private(set) var malformed = false

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
        }

        mutating func next() -> Slice<UnsafeRawBufferPointer>? {
            guard offset < bytes.count, !malformed else { return nil }
            var end = offset
            while end < bytes.count, bytes[end] != 0x0D { end += 1 }
            if end + 1 < bytes.count, bytes[end + 1] != 0x0A {
                malformed = true
                return nil
            }
            let line = bytes[offset..<end]
            offset = end + 2
            return line
        }
    }
}

/// The first handler of every plain or TLS connection: waits for the request head and either
/// completes a WebSocket handshake on `{path}peerjs` itself — leaving only NIO's frame decoder
/// and a ``PeerSocketHandler`` behind — or hands the bytes to NIO's HTTP pipeline and the
/// ``HTTPRouteHandler`` (API routes, CORS, errors, any upgrade it does not accept in full).
final class WebSocketHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// `431 Request Header Fields Too Large`, for a head over `--max_header_size` (the
    /// connection closes after it).
    static let headTooLarge =
        "HTTP/1.1 431 \(ProtocolText.headerFieldsTooLarge)\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + "Content-Length: \(ProtocolText.headerFieldsTooLarge.utf8.count)\r\nConnection: close\r\n\r\n\(ProtocolText.headerFieldsTooLarge)"

    /// When the connection started (on the loop's clock): its first request must be complete by
    /// this plus `--handshake_timeout`, here or in the ``HTTPRouteHandler`` that may take it over.
    private var started = NIODeadline.uptimeNanoseconds(0)
    /// A 431 was sent: what the client sends next is read and dropped until the deadline.
    private var refused = false

    private let state: BrokerState
    private let address: String
    /// This connection's slot in ``Admission``.
    private let slot: UInt64
    private var received: ByteBuffer?
    private var scanned = 0
    private var passThrough = false
    private var timer: Scheduled<Void>?

    /// When the connection started, if before this handler (PeerJSKit's router read its first
    /// line): the handshake deadline counts from then.
    private let since: NIODeadline?

    init(state: BrokerState, address: String, slot: UInt64, since: NIODeadline? = nil) {
        self.state = state
        self.address = address
        self.slot = slot
        self.since = since
    }

    func handlerAdded(context: ChannelHandlerContext) {
        started = since ?? context.eventLoop.now
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: started + .milliseconds(state.configuration.handshakeTimeoutMs)) {
            bound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !passThrough else { return context.fireChannelRead(data) }
        guard !refused else { return }
        var incoming = unwrapInboundIn(data)
        let buffer: ByteBuffer
        if received == nil {
            buffer = incoming
        } else {
            received!.writeBuffer(&incoming)
            buffer = received!
        }
        // The end of the head: CRLF CRLF, or two bare LFs (which HTTP parsers may accept; this
        // reader does not, so such a request goes to NIO whole).
        var bareLF = false
        let end: Int? = buffer.withUnsafeReadableBytes { bytes in
            var i = max(0, scanned - 3)
            while i + 1 < bytes.count {
                if bytes[i] == 0x0A, bytes[i + 1] == 0x0A {
                    bareLF = true
                    return i
                }
                if i + 4 <= bytes.count, bytes[i] == 0x0D, bytes[i + 1] == 0x0A, bytes[i + 2] == 0x0D, bytes[i + 3] == 0x0A {
                    return i
                }
                i += 1
            }
            return nil
        }
        guard let end else {
            // Keep a copy, not NIO's receive buffer: a buffer still referenced here would make NIO
            // allocate a second one for the next read and pool both for the life of the connection.
            if received == nil {
                var copy = context.channel.allocator.buffer(capacity: 2 * buffer.readableBytes)
                var bytes = buffer
                copy.writeBuffer(&bytes)
                received = copy
            }
            scanned = buffer.readableBytes
            // No blank line in this many bytes: the head is longer than the limit.
            if buffer.readableBytes >= state.configuration.maxHeaderBytes { refuseHead(context: context) }
            return
        }
        guard end + (bareLF ? 2 : 4) <= state.configuration.maxHeaderBytes else { return refuseHead(context: context) }
        let request = bareLF ? nil : buffer.withUnsafeReadableBytes { WebSocketUpgradeRequest.parse(UnsafeRawBufferPointer(rebasing: $0[..<end])) }
        guard let request, request.path == state.configuration.webSocketPath else {
            return handToHTTP(context: context, buffered: buffer)
        }
        var rest = buffer
        rest.moveReaderIndex(forwardBy: end + 4)
        received = nil
        upgrade(context: context, request: request, rest: rest)
    }

    /// Answers 101 and turns the connection into a PeerJS socket.
    private func upgrade(context: ChannelHandlerContext, request: WebSocketUpgradeRequest, rest: ByteBuffer) {
        timer?.cancel()
        timer = nil
        let client = ForwardedFor.client(
            socketHost: BrokerState.host(of: address), forwardedFor: request.forwardedFor,
            isTrustedProxy: state.admission.isTrustedProxy, trustedProxies: state.configuration.trustedProxies)
        let withinLimit = state.admission.finishedHandshake(slot, client: client)
        context.write(wrapOutboundOut(WebSocketUpgradeRequest.response(for: request.key, allocator: context.channel.allocator)), promise: nil)
        let socketHost = BrokerState.host(of: address)
        let connection = state.connections.add(context.channel, address: client == socketHost ? address : client)
        do {
            let sync = context.pipeline.syncOperations
            try sync.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: state.configuration.maxMessageBytes)))
            try sync.addHandler(PeerSocketHandler(state: state, connection: connection, maxMessageBytes: state.configuration.maxMessageBytes))
        } catch {
            state.connections.remove(connection)
            context.close(promise: nil)
            return
        }
        if !withinLimit {
            state.counters.addressLimitHits += 1
            // PeerJS 0.x's ip_limit refusal (PROTOCOL.md §10), then a close.
            state.engine.deny(connection, reason: ProtocolText.ipLimit(client))
            context.flush()
            state.connections.flush()
        } else if !state.admit(connection, request: RegistrationRequest(query: request.query), ip: client) {
            // While the auth helper decides, the 101 waits in the channel and leaves with OPEN (or
            // ERROR) in one write: one send and one client wake-up less per connection.
            context.flush()
            state.connections.flush()
        }
        passThrough = true
        if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Not a WebSocket handshake this handler takes: NIO's HTTP server pipeline gets the bytes.
    private func handToHTTP(context: ChannelHandlerContext, buffered: ByteBuffer) {
        timer?.cancel()
        timer = nil
        passThrough = true
        do {
            let sync = context.pipeline.syncOperations
            try sync.configureHTTPServerPipeline(withErrorHandling: true)
            let deadline = started + .milliseconds(state.configuration.handshakeTimeoutMs)
            try sync.addHandler(HTTPRouteHandler(state: state, address: address, deadline: deadline), name: "routes")
        } catch {
            context.close(promise: nil)
            return
        }
        received = nil
        context.fireChannelRead(wrapInboundOut(buffered))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// A head over `--max_header_size`: 431, then the output is shut and the deadline (still
    /// running) closes the connection; what arrives meanwhile is dropped unread, so that a close
    /// with unread bytes does not reset the connection before the client has read its 431.
    private func refuseHead(context: ChannelHandlerContext) {
        refused = true
        received = nil
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: Self.headTooLarge))).whenComplete { _ in
            bound.value.close(mode: .output, promise: nil)
        }
    }
}
