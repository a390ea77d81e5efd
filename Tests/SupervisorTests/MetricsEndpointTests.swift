import Glibc
import Testing

@testable import Supervisor

/// The supervisor's metrics endpoint reads no more of a request than the end of its head and
/// the prefix of its first line (it is privileged: it parses nothing else).
@Suite("Metrics endpoint requests")
struct MetricsEndpointTests {
    static func answer(_ request: String) -> String {
        let bytes = Array(request.utf8)
        guard let end = MetricsEndpoint.headEnd(bytes) else { return "incomplete" }
        return String(decoding: MetricsEndpoint.answer(to: bytes[..<end]) { Array("x 1\n".utf8) }, as: UTF8.self)
    }

    @Test("GET /metrics (with or without a query, CRLF or LF) gets the exposition; anything else 404; an unfinished head waits")
    func answers() {
        for request in ["GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", "GET /metrics?x=1 HTTP/1.0\n\n"] {
            let text = Self.answer(request)
            #expect(text.hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\n"), "\(request)")
            #expect(text.hasSuffix("\r\n\r\nx 1\n"))
        }
        for request in ["GET / HTTP/1.1\r\n\r\n", "POST /metrics HTTP/1.1\r\n\r\n", "GET /metricsx HTTP/1.1\r\n\r\n", "\r\n\r\n"] {
            #expect(Self.answer(request).hasPrefix("HTTP/1.1 404 Not Found\r\n"), "\(request)")
        }
        #expect(Self.answer("GET /metrics HTTP/1.1\r\nHost: a\r\n") == "incomplete")
    }

    @Test("a client is answered, its side shut down, and closed when it closes; one past its deadline is closed unanswered")
    func clients() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &pair) == 0)
        let endpoint = MetricsEndpoint(listeners: [])
        endpoint.adoptForTesting(pair[0], now: 0)
        _ = "GET /metrics HTTP/1.1\r\n\r\n".withCString { write(pair[1], $0, strlen($0)) }
        endpoint.serve(pair[0], revents: Int16(POLLIN)) { Array("peerjs_peers 1\n".utf8) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(pair[1], &buffer, buffer.count)
        #expect(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).hasSuffix("peerjs_peers 1\n"))
        #expect(read(pair[1], &buffer, buffer.count) == 0, "our side is shut down after the answer")
        #expect(endpoint.clients[pair[0]]?.draining == true)
        // What the client sends now is dropped; its close ends it.
        _ = "extra".withCString { write(pair[1], $0, strlen($0)) }
        endpoint.serve(pair[0], revents: Int16(POLLIN)) { [] }
        #expect(endpoint.clients.count == 1)
        close(pair[1])
        endpoint.serve(pair[0], revents: Int16(POLLIN)) { [] }
        #expect(endpoint.clients.isEmpty)

        // A hang-up or an error ends a client at once.
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        endpoint.adoptForTesting(pair[0], now: 0)
        endpoint.serve(pair[0], revents: Int16(POLLHUP)) { [] }
        #expect(endpoint.clients.isEmpty)
        close(pair[1])

        // A head that does not end within 8 KiB gets 431.
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &pair) == 0)
        endpoint.adoptForTesting(pair[0], now: 0)
        let long = [UInt8](repeating: UInt8(ascii: "a"), count: MetricsEndpoint.maxRequestBytes + 100)
        _ = long.withUnsafeBytes { write(pair[1], $0.baseAddress, $0.count) }
        for _ in 0..<8 { endpoint.serve(pair[0], revents: Int16(POLLIN)) { [] } }
        let answer = read(pair[1], &buffer, buffer.count)
        #expect(String(decoding: buffer.prefix(max(0, answer)), as: UTF8.self).hasPrefix("HTTP/1.1 431 "))
        close(pair[1])
        endpoint.serve(pair[0], revents: Int16(POLLIN)) { [] }
        for _ in 0..<8 where !endpoint.clients.isEmpty { endpoint.serve(pair[0], revents: Int16(POLLIN)) { [] } }
        #expect(endpoint.clients.isEmpty)

        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        endpoint.adoptForTesting(pair[0], now: 0)
        endpoint.expire(now: MetricsEndpoint.deadlineMs - 1)
        #expect(endpoint.clients.count == 1)
        #expect(endpoint.nextDeadline == MetricsEndpoint.deadlineMs)
        endpoint.expire(now: MetricsEndpoint.deadlineMs)
        #expect(endpoint.clients.isEmpty)
        #expect(read(pair[1], &buffer, buffer.count) == 0, "the peer sees EOF")
        close(pair[1])
    }
}
