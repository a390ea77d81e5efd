import NIOCore
import NIOPosix

/// What a scenario hears from its connections. Every call happens on the bench's one event loop.
protocol PeerEvents: AnyObject {
    /// `{"type":"OPEN"}` arrived: the peer is registered.
    func opened(_ peer: PeerConnection)
    /// Any other text (or binary) message, unmasked as the server sent it.
    func received(_ peer: PeerConnection, _ message: UnsafeRawBufferPointer)
    /// The connection could not be set up (connect, upgrade, ERROR/ID-TAKEN before OPEN).
    func failed(_ peer: PeerConnection, _ reason: String)
    /// The channel went away (after `failed` too).
    func closed(_ peer: PeerConnection)
}

/// The state a scenario keeps per peer.
enum PeerState {
    case idle, connecting, open, closing, done
}

/// One PeerJS client: a hand-rolled WebSocket client pipeline of a single handler on raw bytes.
/// It sends a pre-built upgrade request, skips the response headers after checking the status,
/// and parses server frames in place (unmasked, no copies unless a frame straddles two reads).
final class PeerConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let index: Int
    let id: String
    unowned let events: any PeerEvents
    var state = PeerState.idle
    var startNanos: UInt64 = 0
    /// Free for the scenario (e.g. a session number, or a partner index).
    var tag = 0

    private(set) var context: ChannelHandlerContext?
    private let request: [UInt8]
    private var upgraded = false
    private var registered = false
    private var closeSent = false
    private var failedOnce = false
    private var pending: ByteBuffer?
    private var needsFlush = false

    init(index: Int, id: String, request: [UInt8], events: any PeerEvents) {
        self.index = index
        self.id = id
        self.request = request
        self.events = events
    }

    var isRegistered: Bool { registered }

    // MARK: Sending

    /// Queues `bytes` (a complete masked frame); flushed at the end of the current read burst.
    @inline(__always)
    func write(_ buffer: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundIn(buffer), promise: nil)
        needsFlush = true
    }

    func writeAndFlush(_ buffer: ByteBuffer) {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundIn(buffer), promise: nil)
        needsFlush = false
    }

    @inline(__always)
    private func wrapOutboundIn(_ buffer: ByteBuffer) -> NIOAny { NIOAny(buffer) }

    func allocator() -> ByteBufferAllocator? { context?.channel.allocator }

    /// Starts the closing handshake (status 1000); the server answers and closes TCP first.
    func sendClose() {
        guard let context, !closeSent else { return }
        closeSent = true
        state = .closing
        var buffer = context.channel.allocator.buffer(capacity: 8)
        buffer.writeBytes(WSFrame.masked(opcode: 0x8, payload: [0x03, 0xE8]))
        context.writeAndFlush(NIOAny(buffer), promise: nil)
    }

    func abort() {
        context?.close(promise: nil)
    }

    func fail(_ reason: String) {
        guard !failedOnce else { return }
        failedOnce = true
        events.failed(self, reason)
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: request.count)
        buffer.writeBytes(request)
        context.writeAndFlush(NIOAny(buffer), promise: nil)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !registered { fail("closed before OPEN") }
        self.context = nil
        events.closed(self)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !registered { fail("error before OPEN: \(error)") }
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffer = pending {
            pending = nil
            buffer.writeBuffer(&incoming)
            process(&buffer, context: context)
            if buffer.readableBytes > 0 {
                buffer.discardReadBytes()
                pending = buffer
            }
        } else {
            process(&incoming, context: context)
            if incoming.readableBytes > 0 { pending = incoming }
        }
    }

    private func process(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        if !upgraded {
            guard let end = buffer.withUnsafeReadableBytes({ Bytes.find(Bytes.crlfcrlf, in: $0) }) else {
                if buffer.readableBytes > 16384 {
                    fail("upgrade response too long")
                    context.close(promise: nil)
                }
                return
            }
            let ok = buffer.withUnsafeReadableBytes { Bytes.hasPrefix(Bytes.status101, $0) }
            guard ok else {
                let line = buffer.getString(at: buffer.readerIndex, length: Swift.min(end, 40)) ?? "?"
                fail("upgrade refused: \(line.split(separator: "\r").first ?? "")")
                buffer.moveReaderIndex(to: buffer.writerIndex)
                context.close(promise: nil)
                return
            }
            buffer.moveReaderIndex(forwardBy: end + 4)
            upgraded = true
        }
        while self.context != nil {
            let readable = buffer.readableBytes
            guard readable >= 2 else { return }
            let start = buffer.readerIndex
            let b0 = buffer.getInteger(at: start, as: UInt8.self)!
            let b1 = buffer.getInteger(at: start + 1, as: UInt8.self)!
            var length = Int(b1 & 0x7F)
            var header = 2
            if length == 126 {
                guard readable >= 4 else { return }
                length = Int(buffer.getInteger(at: start + 2, as: UInt16.self)!)
                header = 4
            } else if length == 127 {
                guard readable >= 10 else { return }
                length = Int(truncatingIfNeeded: buffer.getInteger(at: start + 2, as: UInt64.self)!)
                header = 10
            }
            if b1 & 0x80 != 0 || length < 0 || length > 1 << 24 {
                fail("bad frame from server")
                buffer.moveReaderIndex(to: buffer.writerIndex)
                context.close(promise: nil)
                return
            }
            guard readable >= header + length else { return }
            buffer.moveReaderIndex(forwardBy: header)
            handleFrame(opcode: b0 & 0x0F, buffer: buffer, length: length, context: context)
            buffer.moveReaderIndex(forwardBy: length)
        }
    }

    private func handleFrame(opcode: UInt8, buffer: ByteBuffer, length: Int, context: ChannelHandlerContext) {
        switch opcode {
        case 0x0, 0x1, 0x2:
            buffer.withUnsafeReadableBytes { raw in
                let message = UnsafeRawBufferPointer(rebasing: raw[0..<length])
                if registered {
                    events.received(self, message)
                } else if Bytes.find(Bytes.openType, in: message) != nil {
                    registered = true
                    events.opened(self)
                } else if Bytes.find(Bytes.errorType, in: message) != nil || Bytes.find(Bytes.idTakenType, in: message) != nil {
                    fail("rejected: \(String(decoding: message.prefix(120), as: UTF8.self))")
                    context.close(promise: nil)
                } else {
                    events.received(self, message)
                }
            }
        case 0x8:
            if !closeSent {
                closeSent = true
                let code = buffer.getBytes(at: buffer.readerIndex, length: Swift.min(length, 2)) ?? []
                var reply = context.channel.allocator.buffer(capacity: 8)
                reply.writeBytes(WSFrame.masked(opcode: 0x8, payload: code))
                context.writeAndFlush(NIOAny(reply), promise: nil)
            }
            context.close(promise: nil)
        case 0x9:
            let payload = buffer.getBytes(at: buffer.readerIndex, length: length) ?? []
            var pong = context.channel.allocator.buffer(capacity: length + 8)
            pong.writeBytes(WSFrame.masked(opcode: 0xA, payload: payload))
            context.write(NIOAny(pong), promise: nil)
            needsFlush = true
        default:
            break
        }
    }
}

/// Byte searches on raw buffers (no String, no Foundation).
enum Bytes {
    static let crlfcrlf: [UInt8] = Array("\r\n\r\n".utf8)
    static let status101: [UInt8] = Array("HTTP/1.1 101".utf8)
    static let openType: [UInt8] = Array("\"OPEN\"".utf8)
    static let errorType: [UInt8] = Array("\"ERROR\"".utf8)
    static let idTakenType: [UInt8] = Array("\"ID-TAKEN\"".utf8)
    static let tsKey: [UInt8] = Array("\"ts\"".utf8)
    static let srcKey: [UInt8] = Array("\"src\"".utf8)

    static func hasPrefix(_ prefix: [UInt8], _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= prefix.count else { return false }
        for i in 0..<prefix.count where bytes[i] != prefix[i] { return false }
        return true
    }

    /// The offset of the first occurrence of `needle` in `haystack`.
    static func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer, from: Int = 0) -> Int? {
        let n = needle.count
        guard n > 0, haystack.count >= n else { return nil }
        let first = needle[0]
        var i = from
        let last = haystack.count - n
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < n && haystack[i + j] == needle[j] { j += 1 }
                if j == n { return i }
            }
            i += 1
        }
        return nil
    }

    /// The offset just after `"key"` `:` and optional spaces and one opening quote.
    private static func valueStart(_ key: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int? {
        guard var i = find(key, in: bytes) else { return nil }
        i += key.count
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x3A { i += 1 }
        if i < bytes.count, bytes[i] == 0x22 { i += 1 }
        return i
    }

    /// The decimal digits after `"ts":` (quoted or not): the send time of a relayed message.
    static func timestamp(in bytes: UnsafeRawBufferPointer) -> UInt64? {
        guard var i = valueStart(tsKey, in: bytes) else { return nil }
        var value: UInt64 = 0
        var digits = 0
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            value = value &* 10 &+ UInt64(bytes[i] - 0x30)
            digits += 1
            i += 1
        }
        return digits > 0 ? value : nil
    }

    /// The string value of `"src"` (ids here never need escapes).
    static func source(in bytes: UnsafeRawBufferPointer) -> [UInt8]? {
        guard let start = valueStart(srcKey, in: bytes) else { return nil }
        var end = start
        while end < bytes.count, bytes[end] != 0x22 { end += 1 }
        return end > start ? Array(bytes[start..<end]) : nil
    }
}

/// Client WebSocket frames: always masked (RFC 6455 §5.3), with one fixed non-zero key so that
/// templates can be masked once and patched in place.
enum WSFrame {
    static let mask: [UInt8] = [0x3D, 0xA7, 0x19, 0xC4]

    static func header(opcode: UInt8, length: Int) -> [UInt8] {
        var out: [UInt8] = [0x80 | opcode]
        if length < 126 {
            out.append(0x80 | UInt8(length))
        } else if length < 65536 {
            out += [0x80 | 126, UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            out.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((length >> shift) & 0xFF)) }
        }
        return out + mask
    }

    static func masked(opcode: UInt8, payload: [UInt8]) -> [UInt8] {
        var out = header(opcode: opcode, length: payload.count)
        out.reserveCapacity(out.count + payload.count)
        for (i, byte) in payload.enumerated() { out.append(byte ^ mask[i & 3]) }
        return out
    }
}

/// A masked text frame built once, whose 16-digit `"ts"` value is rewritten for every send.
struct FrameTemplate {
    static let digits = 16
    let bytes: [UInt8]
    /// Where the first timestamp digit is in `bytes`.
    let timestampOffset: Int
    /// The mask byte that applies to each timestamp digit.
    let timestampMask: [UInt8]

    /// `json` must contain `"ts":"0000000000000000"` exactly once.
    init(json: String) {
        let payload = Array(json.utf8)
        let marker = Array("\"ts\":\"".utf8)
        let at = payload.withUnsafeBytes { Bytes.find(marker, in: $0) }! + marker.count
        let header = WSFrame.header(opcode: 0x1, length: payload.count)
        bytes = WSFrame.masked(opcode: 0x1, payload: payload)
        timestampOffset = header.count + at
        timestampMask = (0..<Self.digits).map { WSFrame.mask[(at + $0) & 3] }
    }

    /// A buffer holding the frame stamped with `nanos`.
    @inline(__always)
    func stamped(_ nanos: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        let offset = timestampOffset
        timestampMask.withUnsafeBufferPointer { mask in
            buffer.withUnsafeMutableReadableBytes { raw in
                var value = nanos
                var k = Self.digits - 1
                while k >= 0 {
                    raw[offset + k] = (0x30 + UInt8(value % 10)) ^ mask[k]
                    value /= 10
                    k -= 1
                }
            }
        }
        return buffer
    }
}
