import CShim
import Glibc

/// The `--metrics-port` listener (or the systemd socket named `metrics`), served from the
/// supervisor's poll loop. The supervisor is privileged, so it does not parse HTTP: it reads at
/// most ``maxRequestBytes`` up to the blank line that ends a request head, answers a request
/// line that starts with `GET /metrics` with the exposition and anything else with 404, and
/// closes. Every client has a deadline, and there are at most ``maxClients`` at once.
final class MetricsEndpoint {
    struct Client {
        var received: [UInt8] = []
        var response: [UInt8] = []
        var sent = 0
        let deadline: Int64
        var answered: Bool { !response.isEmpty }
    }

    /// The systemd `FileDescriptorName=` of a socket-activated metrics listener.
    static let socketName = "metrics"
    /// How often the broker sends its series when there is an endpoint.
    static let brokerIntervalMs: UInt32 = 1000
    static let maxClients = 16
    static let maxRequestBytes = 8192
    static let deadlineMs: Int64 = 5000

    let listeners: [Listener]
    private(set) var clients: [Int32: Client] = [:]

    init(listeners: [Listener]) {
        self.listeners = listeners
    }

    /// The poll entries: the listeners while there is room for a client, and every client (for
    /// its request, or for room to send the rest of its answer).
    func pollEntries() -> [(fd: Int32, events: Int16)] {
        var entries: [(fd: Int32, events: Int16)] = []
        if clients.count < Self.maxClients {
            for listener in listeners { entries.append((listener.descriptor, Int16(POLLIN))) }
        }
        for (fd, client) in clients { entries.append((fd, client.answered ? Int16(POLLOUT) : Int16(POLLIN))) }
        return entries
    }

    func isListener(_ fd: Int32) -> Bool { listeners.contains { $0.descriptor == fd } }

    /// The earliest client deadline, if any client is open.
    var nextDeadline: Int64? { clients.values.map(\.deadline).min() }

    func accept(on fd: Int32, now: Int64) {
        for _ in 0..<Self.maxClients where clients.count < Self.maxClients {
            var storage = sockaddr_storage()
            var length = UInt32(MemoryLayout<sockaddr_storage>.size)
            let client = cshim_accept4(fd, &storage, &length)
            guard client >= 0 else { return }
            clients[client] = Client(deadline: now + Self.deadlineMs)
        }
    }

    /// Takes `fd` as a client accepted at `now` (the tests' socket pairs).
    func adoptForTesting(_ fd: Int32, now: Int64) {
        clients[fd] = Client(deadline: now + Self.deadlineMs)
    }

    /// Reads what `fd` sent; once its request head is complete, answers it with `render()`
    /// (for `GET /metrics`) or 404.
    func read(_ fd: Int32, render: () -> [UInt8]) {
        guard var client = clients[fd], !client.answered else { return }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let count = Glibc.read(fd, &buffer, buffer.count)
        if count < 0, errno == EAGAIN || errno == EINTR { return }
        guard count > 0 else { return drop(fd) }
        client.received += buffer.prefix(count)
        if let end = Self.headEnd(client.received) {
            client.response = Self.answer(to: client.received[..<end], render: render)
        } else if client.received.count >= Self.maxRequestBytes {
            client.response = Self.response(status: "431 Request Header Fields Too Large", body: Array("request head too large\n".utf8))
        }
        clients[fd] = client
        if client.answered { write(fd) }
    }

    /// Sends what is left of `fd`'s answer; closes it once all is out.
    func write(_ fd: Int32) {
        guard var client = clients[fd], client.answered else { return }
        while client.sent < client.response.count {
            let count = client.response[client.sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0, errno == EAGAIN || errno == EINTR {
                clients[fd] = client
                return
            }
            guard count > 0 else { return drop(fd) }
            client.sent += count
        }
        drop(fd)
    }

    /// Closes every client past its deadline.
    func expire(now: Int64) {
        for (fd, client) in clients where client.deadline <= now { drop(fd) }
    }

    func closeAll() {
        for fd in clients.keys { drop(fd) }
        for listener in listeners { close(listener.descriptor) }
    }

    private func drop(_ fd: Int32) {
        clients[fd] = nil
        close(fd)
    }

    /// The index just past the `\r\n\r\n` (or `\n\n`) that ends a request head.
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 1..<bytes.count where bytes[index] == UInt8(ascii: "\n") {
            if bytes[index - 1] == UInt8(ascii: "\n") { return index + 1 }
            if index >= 3, bytes[index - 1] == UInt8(ascii: "\r"), bytes[index - 2] == UInt8(ascii: "\n") { return index + 1 }
        }
        return nil
    }

    /// The answer to a complete request head: only its first line's prefix is looked at.
    static func answer(to head: ArraySlice<UInt8>, render: () -> [UInt8]) -> [UInt8] {
        let line = head.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }
        for path in ["GET /metrics ", "GET /metrics?"] where line.starts(with: path.utf8) {
            return response(status: "200 OK", contentType: "text/plain; version=0.0.4; charset=utf-8", body: render())
        }
        return response(status: "404 Not Found", body: Array("the metrics are at GET /metrics\n".utf8))
    }

    static func response(status: String, contentType: String = "text/plain; charset=utf-8", body: [UInt8]) -> [UInt8] {
        Array("HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8) + body
    }
}
