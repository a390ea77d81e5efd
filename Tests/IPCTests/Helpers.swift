import Glibc
import IPC

/// A pipe with both ends close-on-exec; the caller closes what it does not hand on.
func makePipe() -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    precondition(pipe(&fds) == 0, "pipe failed: \(errno)")
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return (fds[0], fds[1])
}

/// Waits until `fd` is readable or has hung up, at most `timeoutMs` in all: a signal that
/// interrupts poll (EINTR: the test process reaps children) waits again for the time left,
/// instead of being taken for a time-out.
func waitReadable(_ fd: Int32, timeoutMs: Int64 = 10_000) -> Bool {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let deadline = Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000 + timeoutMs
    while true {
        clock_gettime(CLOCK_MONOTONIC, &now)
        let left = deadline - (Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000)
        guard left > 0 else { return false }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, Int32(left))
        if ready == 1 { return true }
        if ready < 0, errno == EINTR { continue }
        return false
    }
}

/// Reads until EOF (bounded: at most 256 reads, each waiting at most 10 s for data).
/// Returns nil if the pipe did not reach EOF in time.
func readToEOF(_ fd: Int32) -> [UInt8]? {
    var result: [UInt8] = []
    for _ in 0..<256 {
        guard waitReadable(fd) else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = read(fd, &buffer, buffer.count)
        if n == 0 { return result }
        if n < 0 { if errno == EINTR { continue } else { return nil } }
        result += buffer[0..<n]
    }
    return nil
}

/// True when every write end of the pipe whose read end is `readFD` has been closed: the read end
/// reports EOF (waiting at most 10 s, returning as soon as it is known).
func pipeReachedEOF(_ readFD: Int32) -> Bool {
    guard waitReadable(readFD) else { return false }
    var byte: UInt8 = 0
    for _ in 0..<64 {
        let n = read(readFD, &byte, 1)
        if n < 0, errno == EINTR { continue }
        return n == 0
    }
    return false
}

func isOpen(_ fd: Int32) -> Bool {
    fcntl(fd, F_GETFD) >= 0
}

/// Runs `body` and returns the IPCError it threw, or nil when it did not throw.
func ipcError<R>(_ body: () throws(IPCError) -> R) -> IPCError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

/// The code of the IPCError `body` threw, or nil.
func errorCode<R>(_ body: () throws(IPCError) -> R) -> IPCError.Code? {
    ipcError(body)?.code
}

/// A header whose fields are written raw (any version, flags, type, reserved).
func rawHeader(version: UInt8 = 1, flags: UInt8 = 0, type: UInt16, length: UInt32, requestID: UInt32 = 0, reserved: UInt32 = 0) -> [UInt8] {
    var w = PayloadWriter()
    w.writeUInt8(version)
    w.writeUInt8(flags)
    w.writeUInt16(type)
    w.writeUInt32(length)
    w.writeUInt32(requestID)
    w.writeUInt32(reserved)
    return w.bytes
}

let sampleSettings = BrokerSettings(
    key: "peerjs", path: "/myapp/ü", expireTimeoutMs: 5000, aliveTimeoutMs: 60000,
    cleanupIntervalMs: 1000, concurrentLimit: 5000, allowDiscovery: true, proxied: false,
    corsOrigins: ["https://example.org", "http://localhost:8080", "https://東京.example"],
    maxMessageBytes: 65536, handshakeTimeoutMs: 10000, authTimeoutMs: 750, authEvents: false,
    ipLimit: 7, ipHandshakeLimit: 3, handshakeLimit: 99, outputLimit: 4096, maxHeaderBytes: 2048,
    trustedProxies: ["127.0.0.1", "::1"],
    process: ChildSettings(logLevel: "debug", user: "_peerjs", chrootDirectory: "/run/peerjs/empty", sandboxDebug: true))

let sampleAuthSettings = AuthHelperSettings(
    process: ChildSettings(logLevel: "notice", user: "_peerjs-auth"), programUser: "_peerjs-policy", timeoutMs: 2500,
    usersPath: "/etc/peerjs/users", programPath: "/usr/local/lib/policy ü", jwtKeyPath: "/etc/peerjs/jwt.pem",
    jwtAudience: "peerjs", jwtIssuer: "https://issuer.example")

let sampleV4 = try! PeerAddress(family: .ipv4, bytes: [127, 0, 0, 1], port: 5000)
let sampleV6 = try! PeerAddress(family: .ipv6, bytes: [UInt8](repeating: 0, count: 15) + [1], port: 5000)
let sampleHandoff = ConnectionHandoff(peer: sampleV4, tls: false)

struct UnexpectedEndOfStream: Error {}

/// The next frame; throws at end of stream. (`#require` cannot take a noncopyable value.)
func receiveFrame(_ channel: HandoffChannel) throws -> ReceivedFrame {
    guard let frame = try channel.receive() else { throw UnexpectedEndOfStream() }
    return frame
}

/// The code of the error the next receive throws; nil when it returns a frame or end of stream.
func receiveError(_ channel: HandoffChannel) -> IPCError.Code? {
    do {
        _ = try channel.receive()
        return nil
    } catch {
        return error.code
    }
}

/// True at end of stream, false when a frame arrived (it is dropped, closing any fd).
func receiveIsEndOfStream(_ channel: HandoffChannel) throws -> Bool {
    guard let frame = try channel.receive() else { return true }
    _ = consume frame
    return false
}
