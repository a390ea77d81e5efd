import Foundation
import PeerJSTesting
import Testing

/// The broker answers WebSocket handshakes itself (Sources/Broker/WebSocketHandshake.swift) and
/// gives any request it does not take in full to NIO's HTTP pipeline. These drive the real
/// server with raw bytes: the forms real clients send are upgraded, the rest are answered as
/// HTTP, never upgraded by mistake and never left hanging.
extension SharedServer {
    @Suite("WebSocket handshake (raw TCP)")
    struct Handshake {
        /// The opening request for a fresh id, with `headers` after the request line.
        static func request(_ s: Endpoint, id: String, token: String = "tok", method: String = "GET", headers: [String]) -> [UInt8] {
            let head = ["\(method) \(s.basePath)peerjs?key=\(s.key)&id=\(id)&token=\(token) HTTP/1.1"] + headers
            return Array((head.joined(separator: "\r\n") + "\r\n\r\n").utf8)
        }

        static let standard = [
            "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
        ]

        static let open: [UInt8] = [0x81, 15] + Array(#"{"type":"OPEN"}"#.utf8)

        static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

        /// Sends `chunks` one write each and waits for the 101 and OPEN.
        static func expectUpgrade(_ s: Endpoint, _ chunks: [[UInt8]], comment: Comment) async throws {
            let connection = try await RawTCPConnection.connect(host: s.host, port: s.port)
            for chunk in chunks {
                await connection.send(chunk)
            }
            let opened = await connection.waitForData(timeout: .seconds(5)) { $0.ends(with: open) }
            let received = text(connection.received)
            #expect(opened, comment)
            #expect(received.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"), "\(comment): \(received)")
            // RFC 6455 §1.3's example key and accept value.
            #expect(received.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "\(comment): \(received)")
            await connection.close()
        }

        /// Sends one request and expects an HTTP 400 (or a close), never a 101.
        static func expectRefusal(_ s: Endpoint, _ bytes: [UInt8], comment: Comment) async throws {
            let connection = try await RawTCPConnection.connect(host: s.host, port: s.port)
            await connection.send(bytes)
            let answered = await connection.waitForData(timeout: .seconds(5)) { $0.count >= 12 }
            let head = text(Array(connection.received.prefix(12)))
            let closed = answered ? true : await connection.waitForEOF(timeout: .milliseconds(100))
            #expect(answered || closed, comment)
            #expect(head == "HTTP/1.1 400", "\(comment): \(text(connection.received))")
            await connection.close()
        }

        @Test("H1 a request head split over several TCP writes is upgraded")
        func splitHead() async throws {
            let s = try Endpoint.current()
            let bytes = Self.request(s, id: Unique.id("h"), headers: Self.standard)
            try await Self.expectUpgrade(
                s, [Array(bytes[..<7]), Array(bytes[7..<60]), Array(bytes[60..<(bytes.count - 3)]), Array(bytes.suffix(3))],
                comment: "split head")
        }

        @Test("H2 header names in any case, listed Connection and Upgrade values, extra headers: upgraded")
        func headerForms() async throws {
            let s = try Endpoint.current()
            let firefox = [
                "host: 127.0.0.1", "User-Agent: test", "upgrade: WebSocket", "connection: keep-alive, Upgrade",
                "sec-websocket-key:  dGhlIHNhbXBsZSBub25jZQ==  ", "SEC-WEBSOCKET-VERSION: 13",
                "Sec-WebSocket-Extensions: permessage-deflate", "Origin: http://example.com", "Content-Length: 0",
            ]
            try await Self.expectUpgrade(s, [Self.request(s, id: Unique.id("h"), headers: firefox)], comment: "browser-like head")
        }

        @Test("H3 a frame sent in the same write as the request head is read after the upgrade (ping → pong)")
        func frameAfterHead() async throws {
            let s = try Endpoint.current()
            let connection = try await RawTCPConnection.connect(host: s.host, port: s.port)
            await connection.send(Self.request(s, id: Unique.id("h"), headers: Self.standard) + rawFrame(firstByte: 0x89, payload: [1, 2, 3]))
            let pong: [UInt8] = [0x8A, 3, 1, 2, 3]
            let answered = await connection.waitForData(timeout: .seconds(5)) { $0.ends(with: Self.open + pong) || $0.ends(with: pong) }
            #expect(answered, "no pong after the upgrade: \(Self.text(connection.received))")
            await connection.close()
        }

        @Test("H4 upgrades the broker does not take in full are answered 400 by the HTTP pipeline, never upgraded")
        func refusedForms() async throws {
            let s = try Endpoint.current()
            var cases: [(String, [UInt8])] = []
            cases.append(("version 8", Self.request(s, id: Unique.id("h"), headers: Self.standard.dropLast() + ["Sec-WebSocket-Version: 8"])))
            cases.append(("two keys", Self.request(s, id: Unique.id("h"), headers: Self.standard + ["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="])))
            cases.append(("no key", Self.request(s, id: Unique.id("h"), headers: Self.standard.filter { !$0.hasPrefix("Sec-WebSocket-Key") })))
            cases.append(("Upgrade: h2c", Self.request(s, id: Unique.id("h"), headers: Self.standard.map { $0 == "Upgrade: websocket" ? "Upgrade: h2c" : $0 })))
            cases.append(("POST", Self.request(s, id: Unique.id("h"), method: "POST", headers: Self.standard)))
        let lf = Self.request(s, id: Unique.id("h"), headers: Self.standard).split(separator: 0x0D, omittingEmptySubsequences: false).joined()
        cases.append(("bare LF line ends", Array(lf)))
            for (name, bytes) in cases {
                try await Self.expectRefusal(s, bytes, comment: "\(name)")
            }
        }

        @Test("H5 an API request and a second one on the same keep-alive connection are both answered")
        func keepAliveHTTP() async throws {
            let s = try Endpoint.current()
            let connection = try await RawTCPConnection.connect(host: s.host, port: s.port)
            let get = Array("GET \(s.basePath)\(s.key)/id HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
            await connection.send(get)
            let first = await connection.waitForData(timeout: .seconds(5)) { Self.text($0).components(separatedBy: "HTTP/1.1 200").count == 2 }
            #expect(first)
            await connection.send(get)
            let second = await connection.waitForData(timeout: .seconds(5)) { Self.text($0).components(separatedBy: "HTTP/1.1 200").count == 3 }
            #expect(second)
            await connection.close()
        }

        @Test("H6 200 mutated handshakes (seeded): each is upgraded, refused with a 4xx or closed — never a hang — and the server still serves")
        func mutatedHandshakes() async throws {
            let s = try Endpoint.current()
            var rng = HandshakeMutationRNG(seed: 0x5eed_1234)
            let base = Self.request(s, id: "m", headers: Self.standard + ["X-Forwarded-For: 10.0.0.1"])
            let alphabet = Array(" :,\r\n\t\u{0}\u{7f}GETHTP/1.0upgradewebsocket13?&=".utf8) + [0xff, 0xc3]
            for round in 0..<200 {
                var bytes = base
                for _ in 0..<(1 + Int(rng.next() % 4)) {
                    let at = Int(rng.next() % UInt64(bytes.count))
                    switch rng.next() % 3 {
                    case 0: bytes[at] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                    case 1: bytes.remove(at: at)
                    default: bytes.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: at)
                    }
                }
                let connection = try await RawTCPConnection.connect(host: s.host, port: s.port)
                // A blank line after the mutated bytes, so that every head ends.
                await connection.send(bytes + Array("\r\n\r\n".utf8))
                let answered = await connection.waitForData(timeout: .seconds(2)) { $0.count >= 12 }
                let head = Self.text(Array(connection.received.prefix(12)))
                if answered {
                    #expect(
                        head == "HTTP/1.1 101" || head.hasPrefix("HTTP/1.1 4") || head.hasPrefix("HTTP/1.0 4"),
                        "round \(round): \(Self.text(connection.received)) for \(Self.text(bytes))")
                }
                await connection.close()
            }
            let a = try await s.register("after")
            let b = try await s.register("after")
            try await a.ws.sendJSON(["type": "OFFER", "dst": .string(b.id), "payload": ["sdp": "x"]])
            #expect(try await b.ws.nextJSON()["type"] == "OFFER")
            await a.ws.close()
            await b.ws.close()
        }
    }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool {
        count >= suffix.count && self[(count - suffix.count)...].elementsEqual(suffix)
    }
}

/// xorshift64*: the mutations of H6 are the same on every run.
struct HandshakeMutationRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}
