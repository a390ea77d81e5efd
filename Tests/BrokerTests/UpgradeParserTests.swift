import Testing

@testable import Broker

/// The WebSocket upgrade fast path reads request heads itself; what it takes for a line end and
/// which client address it believes are security decisions (issue 15 review).
@Suite("Upgrade head parser and X-Forwarded-For")
struct UpgradeParserTests {
    static func parse(_ text: String) -> WebSocketUpgradeRequest? {
        Array(text.utf8).withUnsafeBytes { WebSocketUpgradeRequest.parse($0) }
    }

    static let head = "GET /peerjs?id=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"

    @Test("a plain upgrade head is taken")
    func plain() {
        #expect(Self.parse(Self.head)?.key == "dGhlIHNhbXBsZSBub25jZQ==")
    }

    @Test("a bare CR is no line end: a header hidden behind one is not read, the head goes to NIO's parser")
    func bareCR() {
        let smuggled = "GET /peerjs?id=a HTTP/1.1\r\nUser-Agent: a\rUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
        #expect(Self.parse(smuggled) == nil)
        let doubled = "GET /peerjs?id=a HTTP/1.1\r\nHost: x\r\rX-Forwarded-For: 1.2.3.4\r\nUpgrade: websocket\r\n"
            + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
        #expect(Self.parse(doubled) == nil)
    }

    @Test("every X-Forwarded-For header is kept, in order")
    func forwardedHeaders() {
        let request = Self.parse(Self.head + "\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 192.0.2.5, 198.51.100.2")
        #expect(request?.forwardedFor == "10.0.0.1,192.0.2.5, 198.51.100.2")
    }

    @Test("the client is the rightmost entry that is not a trusted proxy, and only from a trusted proxy")
    func forwardedClient() {
        let trusted: (String) -> Bool = { ["127.0.0.1", "192.0.2.9"].contains($0) }
        let list = ["127.0.0.1", "192.0.2.9"]
        func client(_ socket: String, _ header: String?) -> String {
            ForwardedFor.client(socketHost: socket, forwardedFor: header, isTrustedProxy: trusted, trustedProxies: list)
        }
        #expect(client("127.0.0.1", "198.51.100.7, 203.0.113.5") == "203.0.113.5")
        #expect(client("127.0.0.1", "203.0.113.5, 192.0.2.9") == "203.0.113.5")
        #expect(client("10.9.9.9", "203.0.113.5") == "10.9.9.9", "not from a trusted proxy: the header is ignored")
        #expect(client("127.0.0.1", "203.0.113.5:4711") == "127.0.0.1", "not a numeric address")
        #expect(client("127.0.0.1", "::FFFF:203.0.113.5") == "203.0.113.5", "canonical form, as the supervisor reports")
        #expect(client("127.0.0.1", "0:0::1") == "::1")
        #expect(client("127.0.0.1", nil) == "127.0.0.1")
        #expect(client("127.0.0.1", "127.0.0.1, 192.0.2.9") == "127.0.0.1", "only proxies: the socket's")
    }

    @Test("per-address limits count IPv4 addresses and IPv6 /64s")
    func limitKeys() {
        #expect(Admission.limitKey("203.0.113.5") == "203.0.113.5")
        #expect(Admission.limitKey("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64")
        #expect(Admission.limitKey("2001:db8:1:2::ffff") == "2001:db8:1:2::/64")
    }
}
