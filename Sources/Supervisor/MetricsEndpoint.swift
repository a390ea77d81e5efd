import CShim
import Glibc

/// The `--metrics-port` listener (or the systemd socket named `metrics`), served from the
/// supervisor's poll loop. The supervisor is privileged, so it does not parse HTTP: it reads at
/// most ``maxRequestBytes`` up to the blank line that ends a request head, answers a request
/// line that starts with `GET /metrics` with the exposition and anything else with 404, then
/// shuts its side down and reads (and drops) what the client still sends until it closes, so
/// the answer is not lost to a reset. Every client has a deadline, and there are at most
/// ``maxClients`` at once.
final class MetricsEndpoint {
    struct Client {
        var received: [UInt8] = []
        var response: [UInt8] = []
        var sent = 0
        let deadline: Int64
        /// Its request is answered (the answer is being sent, or is out).
        var answered = false
        /// The whole answer is out and our side is shut down: what comes now is dropped.
        var draining = false
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
        for (fd, client) in clients {
            entries.append((fd, client.answered && !client.draining ? Int16(POLLOUT) : Int16(POLLIN)))
        }
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

    /// One poll result for client `fd`: an error or a hang-up without data ends it; otherwise it
    /// is read from or written to.
    func serve(_ fd: Int32, revents: Int16, render: () -> [UInt8]) {
        if revents & Int16(POLLERR | POLLNVAL) != 0 || (revents & Int16(POLLHUP) != 0 && revents & Int16(POLLIN) == 0) {
            return drop(fd)
        }
        if revents & Int16(POLLOUT) != 0 { write(fd) } else if revents & Int16(POLLIN) != 0 { read(fd, render: render) }
    }

    /// Reads what `fd` sent; once its request head is complete, answers it with `render()`
    /// (for `GET /metrics`) or 404. A draining client's bytes are dropped until it closes.
    func read(_ fd: Int32, render: () -> [UInt8]) {
        guard let client = clients[fd] else { return }
        guard !client.draining else {
            var sink = [UInt8](repeating: 0, count: 2048)
            let count = Glibc.read(fd, &sink, sink.count)
            if count < 0, errno == EAGAIN || errno == EINTR { return }
            if count <= 0 { drop(fd) }
            return
        }
        guard !client.answered else { return }
        let before = client.received.count
        var buffer = [UInt8](repeating: 0, count: min(2048, Self.maxRequestBytes - before))
        let count = Glibc.read(fd, &buffer, buffer.count)
        if count < 0, errno == EAGAIN || errno == EINTR { return }
        guard count > 0 else { return drop(fd) }
        clients[fd]?.received.append(contentsOf: buffer.prefix(count))
        let received = clients[fd]?.received ?? []
        var response: [UInt8] = []
        if let end = Self.headEnd(received, from: max(0, before - 3)) {
            response = Self.answer(to: received[..<end], render: render)
        } else if received.count >= Self.maxRequestBytes {
            response = Self.response(status: "431 Request Header Fields Too Large", body: Array("request head too large\n".utf8))
        }
        guard !response.isEmpty else { return }
        clients[fd]?.received = []
        clients[fd]?.response = response
        clients[fd]?.answered = true
        write(fd)
    }

    /// Sends what is left of `fd`'s answer; once all is out, shuts our side down and drains.
    func write(_ fd: Int32) {
        guard var client = clients[fd], client.answered, !client.draining else { return }
        while client.sent < client.response.count {
            let count = client.response[client.sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0, errno == EAGAIN || errno == EINTR {
                clients[fd]?.sent = client.sent
                return
            }
            guard count > 0 else { return drop(fd) }
            client.sent += count
        }
        shutdown(fd, Int32(SHUT_WR))
        clients[fd]?.response = []
        clients[fd]?.draining = true
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

    /// The index just past the `\r\n\r\n` (or `\n\n`) that ends a request head; the search
    /// starts at `start` (what was scanned before needs no second look).
    static func headEnd(_ bytes: [UInt8], from start: Int = 0) -> Int? {
        guard bytes.count >= 2, start < bytes.count else { return nil }
        for index in max(1, start)..<bytes.count where bytes[index] == UInt8(ascii: "\n") {
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
