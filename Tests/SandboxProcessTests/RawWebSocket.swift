import Foundation
import Glibc

/// A minimal blocking WebSocket client over a plain TCP socket (text frames, client masking,
/// 5 s receive timeout), enough to drive a PeerJS session against the real server.
final class RawWebSocket {
    private let fd: Int32
    private var buffered: [UInt8] = []

    init(port: Int, path: String) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket failed") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            close(fd)
            throw TestFailure("connect to 127.0.0.1:\(port) failed: \(errno)")
        }
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try send(Array(request.utf8))
        while true {
            if let end = find(Array("\r\n\r\n".utf8)) {
                let head = String(decoding: buffered[..<end], as: UTF8.self)
                buffered.removeFirst(end + 4)
                guard head.hasPrefix("HTTP/1.1 101") else { throw TestFailure("upgrade refused: \(head)") }
                return
            }
            try fill()
        }
    }

    deinit { close(fd) }

    private func find(_ needle: [UInt8]) -> Int? {
        guard buffered.count >= needle.count else { return nil }
        for i in 0...(buffered.count - needle.count) where Array(buffered[i..<i + needle.count]) == needle { return i }
        return nil
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw TestFailure(n == 0 ? "connection closed" : "read failed or timed out: \(errno)") }
        buffered += chunk[0..<n]
    }

    private func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw TestFailure("write failed: \(errno)") }
            offset += n
        }
    }

    /// Sends one masked text frame.
    func sendText(_ text: String) throws {
        let payload = Array(text.utf8)
        var frame: [UInt8] = [0x81]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else {
            frame.append(0x80 | 126)
            frame += [UInt8(payload.count >> 8), UInt8(payload.count & 0xff)]
        }
        let mask: [UInt8] = [0x37, 0xfa, 0x21, 0x3d]
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try send(frame)
    }

    /// The next text message (control frames are skipped; a close frame is an error).
    func receiveText() throws -> String {
        while true {
            while buffered.count < 2 { try fill() }
            let opcode = buffered[0] & 0x0f
            var length = Int(buffered[1] & 0x7f)
            var header = 2
            if length == 126 {
                while buffered.count < 4 { try fill() }
                length = Int(buffered[2]) << 8 | Int(buffered[3])
                header = 4
            } else if length == 127 {
                while buffered.count < 10 { try fill() }
                length = buffered[2..<10].reduce(0) { $0 << 8 | Int($1) }
                header = 10
            }
            while buffered.count < header + length { try fill() }
            let payload = Array(buffered[header..<header + length])
            buffered.removeFirst(header + length)
            switch opcode {
            case 0x1: return String(decoding: payload, as: UTF8.self)
            case 0x8: throw TestFailure("server closed the WebSocket")
            default: continue
            }
        }
    }

    /// The next message as a JSON object.
    func receiveJSON() throws -> [String: Any] {
        let text = try receiveText()
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw TestFailure("not a JSON object: \(text)")
        }
        return object
    }
}
