import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PeerJSTesting

#if canImport(Glibc)
    import Glibc
#endif

// Helpers private to the TLS tests: the real binary, openssl-made certificates, and a raw
// NIO client (HTTP/1.1 and WebSocket by hand, over TLS or not). Every wait is bounded; waits
// block on a condition variable signalled by the producer, never on a sleep.

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Output of the binary

/// Lines a child printed (stdout and stderr), read by a thread; waiters are woken per line.
final class OutputLog: @unchecked Sendable {
    private let condition = NSCondition()
    private var lines: [String] = []
    private var partial: [UInt8] = []
    private var eof = false

    var snapshot: [String] {
        condition.lock()
        defer { condition.unlock() }
        return lines
    }

    func start(reading fd: Int32) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                condition.lock()
                for byte in buffer[0..<count] {
                    if byte == UInt8(ascii: "\n") {
                        lines.append(String(decoding: partial, as: UTF8.self))
                        partial.removeAll()
                    } else {
                        partial.append(byte)
                    }
                }
                condition.broadcast()
                condition.unlock()
            }
            close(fd)
            condition.lock()
            if !partial.isEmpty { lines.append(String(decoding: partial, as: UTF8.self)) }
            eof = true
            condition.broadcast()
            condition.unlock()
        }
        thread.start()
    }

    /// The first line at index `start` or later that satisfies `predicate`.
    func waitForLine(from start: Int = 0, timeout: TimeInterval = 20, _ what: String,
                     where predicate: (String) -> Bool) throws -> String {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if start < lines.count, let line = lines[start...].first(where: predicate) { return line }
            if eof { throw TestFailure("output ended without \(what):\n" + lines.joined(separator: "\n")) }
            if !condition.wait(until: deadline) {
                throw TestFailure("no \(what) within \(timeout) s:\n" + lines.joined(separator: "\n"))
            }
        }
    }

    /// Waits until every writer has closed the pipe (the process group has exited).
    func waitForEOF(timeout: TimeInterval) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while !eof {
            if !condition.wait(until: deadline) { return eof }
        }
        return true
    }
}

/// The real `peerjs` binary, started in its own process group with its output captured.
final class PeerJSProcess: @unchecked Sendable {
    let pid: pid_t
    let log: OutputLog
    private var reaped: Int32?

    private init(pid: pid_t, log: OutputLog) {
        self.pid = pid
        self.log = log
    }

    deinit {
        if reaped == nil { _ = stop() }
    }

    /// Spawns `peerjs arguments`, or `launcher... peerjs arguments` (systemd-socket-activate).
    static func spawn(_ arguments: [String], launcher: [String] = []) throws -> PeerJSProcess {
        let peerjs = try ServerProcess.locateBinary()
        let binary = launcher.first ?? peerjs
        // Run as root, the broker drops to --user; `_peerjs` exists only where the package is installed.
        let asUser = geteuid() == 0 && !arguments.contains("--user") ? ["--user", "nobody"] : []
        let arguments = launcher.isEmpty ? arguments + asUser : Array(launcher.dropFirst()) + [peerjs] + arguments + asUser
        // A predictable log format and no inherited socket activation.
        let environment = ProcessInfo.processInfo.environment
            .filter { !["JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"].contains($0.key) }
            .map { "\($0.key)=\($0.value)" }
        let (pid, output) = try ChildSpawner.spawn(binary, arguments, environment: environment)
        let log = OutputLog()
        log.start(reading: output)
        return PeerJSProcess(pid: pid, log: log)
    }

    /// Starts a server and waits for its Started line.
    static func start(_ arguments: [String]) throws -> PeerJSProcess {
        let process = try spawn(["--host", "127.0.0.1"] + arguments)
        _ = try process.log.waitForLine("the Started line") { $0.contains("Started PeerServer on") }
        return process
    }

    /// A TLS server on a free port serving `live.key` and `live.pem` of `certs` (see
    /// ``CertificateDirectory/goLive(_:)``), once it listens.
    static func start(live certs: CertificateDirectory) throws -> PeerJSProcess {
        try start(["--port", "0", "--sslkey", certs.file("live.key"), "--sslcert", certs.file("live.pem")])
    }

    /// The port of the listener named `name` (`http` or `https`), from its `listening on` line.
    func port(_ name: String) throws -> Int {
        let line = try log.waitForLine("a listening line for \(name)") { $0.contains("listening on") && $0.contains("(\(name),") }
        guard let range = line.range(of: " port "),
              let port = Int(line[range.upperBound...].prefix(while: \.isNumber)) else {
            throw TestFailure("cannot parse the port in: \(line)")
        }
        return port
    }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// The supervisor's child (the broker), from /proc.
    func brokerPID() throws -> pid_t {
        let text = try String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)
        guard let child = text.split(separator: " ").compactMap({ pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }).first else {
            throw TestFailure("supervisor \(pid) has no child")
        }
        return child
    }

    /// Waits for the process to end by itself; returns its exit status.
    func waitForExit(timeout: TimeInterval = 20) throws -> Int32 {
        guard log.waitForEOF(timeout: timeout) else {
            _ = stop()
            throw TestFailure("peerjs did not exit within \(timeout) s:\n" + log.snapshot.joined(separator: "\n"))
        }
        return reap()
    }

    /// SIGTERM, then (bounded) SIGKILL to the group; returns the raw wait status.
    @discardableResult
    func stop() -> Int32 {
        if let reaped { return reaped }
        kill(pid, SIGTERM)
        if !log.waitForEOF(timeout: 10) { kill(-pid, SIGKILL) }
        return reap()
    }

    private func reap() -> Int32 {
        if let reaped { return reaped }
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        kill(-pid, SIGKILL)
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        reaped = code
        return code
    }
}

// MARK: - Certificates made by the openssl CLI

/// A temporary directory with a CA and leaf certificates, removed on deinit.
final class CertificateDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/peerjs-tls-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp failed") }
        path = String(cString: made)
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", file("ca.key"), "-out", file("ca.pem"), "-days", "2", "-subj", "/CN=peerjs test CA"])
        try write("ext.cnf", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: file(name), atomically: false, encoding: .utf8)
    }

    func read(_ name: String) throws -> String {
        try String(contentsOfFile: file(name), encoding: .utf8)
    }

    /// Makes `live.key` and `live.pem` the key and chain of leaf `name`: the files a reload test
    /// starts the server on (``PeerJSProcess/start(live:)``) and rewrites before a SIGHUP.
    func goLive(_ name: String) throws {
        try write("live.key", try read("\(name).key"))
        try write("live.pem", try read("\(name)-chain.pem"))
    }

    /// Makes `<name>.key` (PKCS#8, P-256), `<name>.pem` (leaf signed by the CA) and
    /// `<name>-chain.pem` (leaf then CA). `days` may be negative: an expired certificate.
    func makeLeaf(_ name: String, days: Int = 2) throws {
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", file("\(name).key"),
                     "-out", file("\(name).csr"), "-subj", "/CN=localhost"])
        try openssl(["x509", "-req", "-in", file("\(name).csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"),
                     "-set_serial", String(Int.random(in: 1000...1_000_000_000)), "-days", String(days),
                     "-extfile", file("ext.cnf"), "-out", file("\(name).pem")])
        try write("\(name)-chain.pem", try read("\(name).pem") + read("ca.pem"))
    }

    func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        try process.run()
        guard done.wait(timeout: .now() + 30) == .success else {
            process.terminate()
            throw TestFailure("openssl \(arguments.joined(separator: " ")) did not finish in 30 s")
        }
        guard process.terminationStatus == 0 else {
            throw TestFailure("openssl \(arguments.joined(separator: " ")) failed with status \(process.terminationStatus)")
        }
    }

    func certificate(_ name: String) throws -> NIOSSLCertificate {
        guard let first = try NIOSSLCertificate.fromPEMFile(file(name)).first else { throw TestFailure("no certificate in \(name)") }
        return first
    }

    /// A client configuration that trusts only this directory's CA.
    func clientTLS() throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates([try certificate("ca.pem")])
        configuration.applicationProtocols = ["http/1.1"]
        return configuration
    }
}

// MARK: - A raw client

/// Bytes received on one connection, and how it ended; readers block until enough arrived.
final class ByteSink: @unchecked Sendable {
    private let condition = NSCondition()
    private var buffer: [UInt8] = []
    private var closed = false
    private var handshake: String??
    private(set) var error: (any Error)?

    func append(_ bytes: [UInt8]) { update { $0.buffer += bytes } }
    func markClosed() { update { $0.closed = true } }
    func record(_ error: any Error) { update { if $0.error == nil { $0.error = error } } }
    func handshakeCompleted(_ protocolName: String?) { update { $0.handshake = .some(protocolName) } }

    private func update(_ body: (ByteSink) -> Void) {
        condition.lock()
        body(self)
        condition.broadcast()
        condition.unlock()
    }

    /// Blocks until `parse` yields a value (it may consume bytes); throws on close or timeout.
    func take<T>(timeout: TimeInterval = 10, _ what: String, _ parse: (inout [UInt8]) -> T?) throws -> T {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let value = parse(&buffer) { return value }
            if closed { throw TestFailure("connection closed before \(what) (error: \(error.map { "\($0)" } ?? "none"))") }
            if !condition.wait(until: deadline) { throw TestFailure("no \(what) within \(timeout) s") }
        }
    }

    /// Blocks until the connection is closed; returns everything received.
    func waitClosed(timeout: TimeInterval = 10) throws -> [UInt8] {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while !closed {
            if !condition.wait(until: deadline) { throw TestFailure("connection still open after \(timeout) s") }
        }
        return buffer
    }

    /// Blocks until the TLS handshake finished (returns the ALPN protocol) or failed (throws).
    func waitHandshake(timeout: TimeInterval = 10) throws -> String? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let handshake { return handshake }
            if closed || error != nil { throw TestFailure("TLS handshake failed: \(error.map { "\($0)" } ?? "closed")") }
            if !condition.wait(until: deadline) { throw TestFailure("no TLS handshake within \(timeout) s") }
        }
    }
}

final class SinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let sink: ByteSink

    init(sink: ByteSink) { self.sink = sink }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        sink.append(buffer.readBytes(length: buffer.readableBytes) ?? [])
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let negotiated) = event as? TLSUserEvent { sink.handshakeCompleted(negotiated) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        sink.markClosed()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        sink.record(error)
        context.close(promise: nil)
    }
}

/// One TCP connection to 127.0.0.1, with TLS when `tls` is given.
struct RawClient {
    let channel: any Channel
    let sink: ByteSink

    static func connect(host: String = "127.0.0.1", port: Int, tls: TLSConfiguration?, group: any EventLoopGroup) throws -> RawClient {
        let sink = ByteSink()
        let context = try tls.map { try NIOSSLContext(configuration: $0) }
        let channel = try ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    }
                    try channel.pipeline.syncOperations.addHandler(SinkHandler(sink: sink))
                }
            }
            .connect(host: host, port: port).wait()
        return RawClient(channel: channel, sink: sink)
    }

    func send(_ bytes: [UInt8]) throws {
        let done = channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
        _ = try bounded(done)
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// The certificate the server presented (after the handshake).
    func peerCertificate() throws -> NIOSSLCertificate? {
        _ = try sink.waitHandshake()
        return try bounded(channel.nioSSL_peerCertificate())
    }

    func close() { channel.close(promise: nil) }

    private func bounded<T: Sendable>(_ future: EventLoopFuture<T>, seconds: Int64 = 10) throws -> T {
        let promise = channel.eventLoop.makePromise(of: T.self)
        future.cascade(to: promise)
        let timer = channel.eventLoop.scheduleTask(in: .seconds(seconds)) {
            promise.fail(TestFailure("operation did not finish in \(seconds) s"))
        }
        defer { timer.cancel() }
        return try promise.futureResult.wait()
    }

    // MARK: HTTP/1.1

    /// Sends one request with `Connection: close` and reads the response to the end.
    func get(_ path: String) throws -> (status: Int, body: String) {
        try send("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        let text = String(decoding: try sink.waitClosed(), as: UTF8.self)
        guard let head = text.range(of: "\r\n\r\n"), text.hasPrefix("HTTP/1.1 "),
              let status = Int(text.dropFirst(9).prefix(3)) else {
            throw TestFailure("not an HTTP response: \(text.prefix(200))")
        }
        return (status, String(text[head.upperBound...]))
    }

    // MARK: WebSocket (RFC 6455 by hand: enough for PeerJS text frames)

    func upgrade(id: String, token: String = "tok", key: String = "peerjs") throws {
        try send("GET /peerjs?key=\(key)&id=\(id)&token=\(token) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let head = try sink.take("the upgrade response") { buffer -> String? in
            let marker = Array("\r\n\r\n".utf8)
            guard buffer.count >= 4,
                  let end = (0...(buffer.count - 4)).first(where: { Array(buffer[$0..<($0 + 4)]) == marker }) else { return nil }
            let head = String(decoding: buffer[0..<end], as: UTF8.self)
            buffer.removeFirst(end + 4)
            return head
        }
        guard head.hasPrefix("HTTP/1.1 101") else { throw TestFailure("upgrade refused: \(head)") }
    }

    func sendText(_ text: String) throws {
        let payload = Array(text.utf8)
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        var frame: [UInt8] = [0x81]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xff)]
        }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try send(frame)
    }

    /// The next text message (pings and pongs are skipped).
    func readText(timeout: TimeInterval = 10) throws -> String {
        while true {
            let (opcode, payload) = try sink.take(timeout: timeout, "a WebSocket frame") { buffer -> (UInt8, [UInt8])? in
                guard buffer.count >= 2 else { return nil }
                var length = Int(buffer[1] & 0x7f)
                var offset = 2
                if length == 126 {
                    guard buffer.count >= 4 else { return nil }
                    length = Int(buffer[2]) << 8 | Int(buffer[3])
                    offset = 4
                } else if length == 127 {
                    guard buffer.count >= 10 else { return nil }
                    length = buffer[2..<10].reduce(0) { $0 << 8 | Int($1) }
                    offset = 10
                }
                guard buffer.count >= offset + length else { return nil }
                let frame = (buffer[0] & 0x0f, Array(buffer[offset..<(offset + length)]))
                buffer.removeFirst(offset + length)
                return frame
            }
            switch opcode {
            case 1: return String(decoding: payload, as: UTF8.self)
            case 8: throw TestFailure("server closed the WebSocket (payload \(payload))")
            default: continue
            }
        }
    }
}

/// Runs a test body that blocks (condition waits, future waits, waitpid) on a thread of its own
/// and awaits it, so no cooperative-pool thread is held meanwhile: on two cores the pool has two
/// threads, and two blocked ones stall every other test of the run (their deadlines then fail).
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
