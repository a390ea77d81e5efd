import Glibc

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

/// One PeerJS client over a non-blocking socket of the `ClientLoop`: it sends a pre-built upgrade
/// request, skips the response headers after checking the status, and parses server frames in
/// place (unmasked, copied only when a frame straddles two reads).
final class PeerConnection {
    let index: Int
    let id: String
    unowned let events: any PeerEvents
    var state = PeerState.idle
    var startNanos: UInt64 = 0
    /// Free for the scenario (e.g. a session number, or a partner index).
    var tag = 0

    private unowned let loop: ClientLoop
    private let request: [UInt8]
    /// The socket, or -1 before connect and after close.
    private(set) var fd: Int32 = -1
    /// The TCP handshake completed (the request could be written).
    private var established = false
    private var upgraded = false
    private var registered = false
    private var closeSent = false
    private var failedOnce = false
    /// The tail of an incomplete frame (or response head) from earlier reads.
    private var pending: [UInt8] = []
    /// Frames queued and not yet taken by the kernel.
    private var outbox: [UInt8] = []
    private var outboxSent = 0
    private var dirty = false
    private var waitingWritable = false

    init(index: Int, id: String, request: [UInt8], loop: ClientLoop, events: any PeerEvents) {
        self.index = index
        self.id = id
        self.request = request
        self.loop = loop
        self.events = events
    }

    /// The socket is open (false before connect, and once it is closed).
    var isConnected: Bool { fd >= 0 }

    // MARK: Connecting

    /// Takes a socket whose non-blocking connect(2) was started; writes the upgrade request at
    /// once when the handshake already completed (the usual case on loopback).
    func attach(_ socket: Int32) {
        fd = socket
        let sent = Glibc.send(socket, request, request.count, Int32(MSG_NOSIGNAL))
        if sent == request.count {
            established = true
        } else if sent >= 0 {
            established = true
            outbox = Array(request[sent...])
        } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN {
            shut(errno)
            return
        }
        waitingWritable = !established || !outbox.isEmpty
        let error = loop.add(self, fd: socket, writable: waitingWritable)
        if error != 0 {
            established = false
            shut(error)
        }
    }

    // MARK: Sending

    /// Queues a complete masked frame; written at the end of the loop's current round.
    func write(_ bytes: [UInt8]) {
        guard fd >= 0 else { return }
        outbox += bytes
        markDirty()
    }

    /// Queues the template stamped with `nanos`.
    func write(_ template: FrameTemplate, stamp nanos: UInt64) {
        guard fd >= 0 else { return }
        template.append(stamped: nanos, to: &outbox)
        markDirty()
    }

    func writeAndFlush(_ bytes: [UInt8]) {
        write(bytes)
        flush()
    }

    func writeAndFlush(_ template: FrameTemplate, stamp nanos: UInt64) {
        write(template, stamp: nanos)
        flush()
    }

    private func markDirty() {
        if !dirty {
            dirty = true
            loop.markDirty(self)
        }
    }

    /// Writes what the kernel takes; the rest waits for the socket to be writable.
    func flush() {
        dirty = false
        guard fd >= 0, established, outboxSent < outbox.count else { return }
        let sent = outbox.withUnsafeBytes { raw in
            Glibc.send(fd, raw.baseAddress! + outboxSent, raw.count - outboxSent, Int32(MSG_NOSIGNAL))
        }
        if sent < 0 {
            guard errno == EAGAIN || errno == EWOULDBLOCK else {
                shut(errno)
                return
            }
        } else {
            outboxSent += sent
        }
        if outboxSent == outbox.count {
            outbox.removeAll(keepingCapacity: outbox.capacity <= 16384)
            outboxSent = 0
            if waitingWritable {
                waitingWritable = false
                loop.watchWritable(fd: fd, false)
            }
        } else if !waitingWritable {
            waitingWritable = true
            loop.watchWritable(fd: fd, true)
        }
    }

    /// Starts the closing handshake (status 1000); the server answers and closes TCP first.
    func sendClose() {
        guard fd >= 0, !closeSent else { return }
        closeSent = true
        state = .closing
        writeAndFlush(WSFrame.closeFrame)
    }

    /// Closes the socket now.
    func abort() {
        shut()
    }

    func fail(_ reason: String) {
        guard !failedOnce else { return }
        failedOnce = true
        events.failed(self, reason)
    }

    /// Closes the socket; a peer whose handshake never completed reports a connect failure
    /// (and no `closed`), any other `closed` (after "closed before OPEN" if it never got OPEN).
    private func shut(_ error: Int32 = 0) {
        guard fd >= 0 else { return }
        loop.remove(fd: fd)
        close(fd)
        fd = -1
        outbox = []
        pending = []
        guard established else {
            fail("connect: \(String(cString: strerror(error == 0 ? ECONNRESET : error)))")
            return
        }
        if !registered { fail(error == 0 ? "closed before OPEN" : "error before OPEN: \(String(cString: strerror(error)))") }
        events.closed(self)
    }

    // MARK: Readiness

    /// What epoll reported for the socket.
    func ready(_ flags: UInt32) {
        if !established {
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 || flags & (ClientLoop.Event.error | ClientLoop.Event.hangUp) != 0 && flags & ClientLoop.Event.writable == 0 {
                shut(error == 0 ? ECONNREFUSED : error)
                return
            }
            guard flags & ClientLoop.Event.writable != 0 else { return }
            established = true
            outbox = request + outbox
            flush()
        } else if flags & ClientLoop.Event.writable != 0 {
            flush()
        }
        if fd >= 0, flags & (ClientLoop.Event.readable | ClientLoop.Event.hangUp | ClientLoop.Event.error | ClientLoop.Event.peerHangUp) != 0 {
            readAvailable()
        }
    }

    private func readAvailable() {
        let scratch = loop.scratch
        // Bounded: a peer that keeps the socket full gives way to the others after four reads.
        for _ in 0..<4 {
            guard fd >= 0 else { return }
            let n = read(fd, scratch.baseAddress!, scratch.count)
            if n == 0 {
                shut()
                return
            }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
                let error = errno
                shut(error)
                return
            }
            let fresh = UnsafeRawBufferPointer(rebasing: scratch[0..<n])
            if pending.isEmpty {
                let used = process(fresh)
                if used < n, fd >= 0 { pending = Array(fresh[used...]) }
            } else {
                // Out of `pending` while frames are handled (a handler may close this peer).
                var buffer = pending
                pending = []
                buffer.append(contentsOf: fresh)
                let used = buffer.withUnsafeBytes { process($0) }
                if fd >= 0 && used < buffer.count { pending = Array(buffer[used...]) }
            }
            if n < scratch.count { return }
        }
    }

    /// Parses the response head and then whole frames; returns the bytes consumed.
    private func process(_ bytes: UnsafeRawBufferPointer) -> Int {
        var at = 0
        if !upgraded {
            guard let end = Bytes.find(Bytes.crlfcrlf, in: bytes) else {
                if bytes.count > 16384 {
                    fail("upgrade response too long")
                    shut()
                }
                return 0
            }
            guard Bytes.hasPrefix(Bytes.status101, bytes) else {
                let line = String(decoding: bytes.prefix(min(end, 40)), as: UTF8.self)
                fail("upgrade refused: \(line.split(separator: "\r").first ?? "")")
                shut()
                return bytes.count
            }
            at = end + 4
            upgraded = true
        }
        while fd >= 0 {
            let readable = bytes.count - at
            guard readable >= 2 else { break }
            let b0 = bytes[at]
            let b1 = bytes[at + 1]
            var length = Int(b1 & 0x7F)
            var header = 2
            if length == 126 {
                guard readable >= 4 else { break }
                length = Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
                header = 4
            } else if length == 127 {
                guard readable >= 10 else { break }
                length = (0..<8).reduce(0) { $0 << 8 | Int(bytes[at + 2 + $1]) }
                header = 10
            }
            if b1 & 0x80 != 0 || length < 0 || length > 1 << 24 {
                fail("bad frame from server")
                shut()
                return bytes.count
            }
            guard readable >= header + length else { break }
            handleFrame(opcode: b0 & 0x0F, UnsafeRawBufferPointer(rebasing: bytes[(at + header)..<(at + header + length)]))
            at += header + length
        }
        return at
    }

    private func handleFrame(opcode: UInt8, _ message: UnsafeRawBufferPointer) {
        switch opcode {
        case 0x0, 0x1, 0x2:
            if registered {
                events.received(self, message)
            } else if Bytes.find(Bytes.openType, in: message) != nil {
                registered = true
                events.opened(self)
            } else if Bytes.find(Bytes.errorType, in: message) != nil || Bytes.find(Bytes.idTakenType, in: message) != nil {
                fail("rejected: \(String(decoding: message.prefix(120), as: UTF8.self))")
                shut()
            } else {
                events.received(self, message)
            }
        case 0x8:
            if !closeSent {
                closeSent = true
                writeAndFlush(WSFrame.masked(opcode: 0x8, payload: Array(message.prefix(2))))
            }
            shut()
        case 0x9:
            write(WSFrame.masked(opcode: 0xA, payload: Array(message)))
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

    /// Close, status 1000.
    static let closeFrame = masked(opcode: 0x8, payload: [0x03, 0xE8])

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

    /// Appends the frame stamped with `nanos` to `out`.
    @inline(__always)
    func append(stamped nanos: UInt64, to out: inout [UInt8]) {
        let start = out.count + timestampOffset
        out.append(contentsOf: bytes)
        timestampMask.withUnsafeBufferPointer { mask in
            out.withUnsafeMutableBufferPointer { raw in
                var value = nanos
                var k = Self.digits - 1
                while k >= 0 {
                    raw[start + k] = (0x30 + UInt8(value % 10)) ^ mask[k]
                    value /= 10
                    k -= 1
                }
            }
        }
    }
}
