import NIOCore
import NIOEmbedded
import PeerProtocol
import Testing

@testable import Broker

/// The upgrade request a PeerJS client sends, with the query it is given.
func upgradeRequest(_ query: String, path: String = "/peerjs", headers: String = "") -> String {
    "GET \(path)?\(query) HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(headers)\r\n"
}

/// One frame the broker sent (unmasked, RFC 6455 §5.2).
struct SentFrame: Equatable, CustomStringConvertible {
    var opcode: UInt8
    var payload: [UInt8]
    var text: String { String(decoding: payload, as: UTF8.self) }
    var description: String { "\(opcode):\(text)" }

    static func text(_ text: String) -> SentFrame { SentFrame(opcode: 0x1, payload: Array(text.utf8)) }
    /// A close frame carrying `code`, or none.
    static func close(_ code: UInt16? = nil) -> SentFrame {
        SentFrame(opcode: 0x8, payload: code.map { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } ?? [])
    }
    static let open = text(#"{"type":"OPEN"}"#)
    static func error(_ message: String) -> SentFrame { text(#"{"type":"ERROR","payload":{"msg":""# + message + #""}}"#) }
}

/// What a refused client gets: ERROR with `text`, then an empty close frame.
func refusal(_ text: String) -> [SentFrame] { [.error(text), .close()] }

/// The frames in `bytes`, after an HTTP response head if one leads; what cannot be read ends the list.
func sentFrames(_ bytes: [UInt8]) -> [SentFrame] {
    var offset = 0
    if bytes.starts(with: Array("HTTP/".utf8)) {
        guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: [13, 10, 13, 10]) }) else { return [] }
        offset = end + 4
    }
    var frames: [SentFrame] = []
    while offset + 2 <= bytes.count {
        var length = Int(bytes[offset + 1] & 0x7F)
        var start = offset + 2
        if length == 126, start + 2 <= bytes.count {
            length = Int(bytes[start]) << 8 | Int(bytes[start + 1])
            start += 2
        }
        guard start + length <= bytes.count else { break }
        frames.append(SentFrame(opcode: bytes[offset] & 0x0F, payload: Array(bytes[start..<start + length])))
        offset = start + length
    }
    return frames
}

extension Rig {
    /// Takes what was written and reads it as frames (after the 101, if it is there).
    func frames() throws -> [SentFrame] { sentFrames(try writtenBytes()) }

    /// Sends a text message as one masked frame.
    func message(_ text: String) throws { try send(clientFrame(0x1, Array(text.utf8))) }
}

extension TestBroker {
    /// A connection that has upgraded and asked to register as `id`, its writes passing through;
    /// with `expectOpen`, checks that it got 101 and OPEN and reads them off.
    func peer(_ id: String, token: String = "t", from host: String = "192.0.2.7", expectOpen: Bool = true) throws -> Rig? {
        guard let rig = try connect(from: host) else { return nil }
        rig.held.holding = false
        try rig.send(upgradeRequest("key=peerjs&id=\(id)&token=\(token)"))
        if expectOpen {
            let written = try rig.writtenBytes()
            #expect(String(decoding: written, as: UTF8.self).hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
            #expect(sentFrames(written) == [.open], "\(id)")
        }
        return rig
    }
}
