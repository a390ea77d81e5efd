import Glibc

/// The deployer's policy program (`--auth-program`), spoken to in JSON lines over one stream
/// socket that is its stdin and stdout. Started by the helper before the helper's seccomp filter
/// (as the helper's unprivileged user, with no_new_privs), so the program itself runs unfiltered
/// and the helper keeps no right to start programs. When it dies or hangs, the helper exits and
/// the supervisor starts both again.
/// - Parameters:
///   - descriptor: the helper's end of the socket (non-blocking).
///   - pid: the program's process id.
final class PolicyProgram {
    let descriptor: Int32
    let pid: pid_t
    private var outbox: [UInt8] = []
    private var inbox: [UInt8] = []
    static let maxLineLength = 64 * 1024

    private init(descriptor: Int32, pid: pid_t) {
        self.descriptor = descriptor
        self.pid = pid
    }

    deinit { close(descriptor) }

    /// Starts `path` (no arguments, the helper's environment) with the socket as fd 0 and 1 and
    /// the helper's stderr as fd 2.
    static func start(path: String) throws(AuthError) -> PolicyProgram {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw AuthError("socketpair for the policy program failed: \(String(cString: strerror(errno)))")
        }
        defer { close(fds[1]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 0)  // dup2 clears FD_CLOEXEC
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGCHLD, SIGHUP, SIGTERM, SIGINT] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = [strdup(path), nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard rc == 0 else {
            close(fds[0])
            throw AuthError("cannot start the policy program \(path): \(String(cString: strerror(rc)))")
        }
        let flags = fcntl(fds[0], F_GETFL)
        _ = fcntl(fds[0], F_SETFL, flags | O_NONBLOCK)
        return PolicyProgram(descriptor: fds[0], pid: pid)
    }

    var wantsToWrite: Bool { !outbox.isEmpty }

    /// Queues one JSON line and writes what the socket takes now.
    func send(line: String) throws(AuthError) {
        outbox += Array(line.utf8) + [0x0a]
        try flush()
    }

    /// Writes queued bytes until the socket is full.
    func flush() throws(AuthError) {
        while !outbox.isEmpty {
            let written = outbox.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                throw AuthError("writing to the policy program failed: \(String(cString: strerror(errno)))")
            }
            outbox.removeFirst(written)
        }
    }

    /// Reads what is available and returns the complete lines; throws at EOF (the program ended)
    /// or on a line longer than 64 KiB.
    func readLines() throws(AuthError) -> [String] {
        var chunk = [UInt8](repeating: 0, count: 8192)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { break }
                throw AuthError("reading from the policy program failed: \(String(cString: strerror(errno)))")
            }
            if count == 0 { throw AuthError("the policy program (pid \(pid)) closed its output or exited") }
            inbox += chunk[0..<count]
        }
        var lines: [String] = []
        while let newline = inbox.firstIndex(of: 0x0a) {
            lines.append(String(decoding: inbox[..<newline], as: UTF8.self))
            inbox.removeFirst(newline + 1)
        }
        guard inbox.count <= Self.maxLineLength else {
            throw AuthError("the policy program wrote a line longer than \(Self.maxLineLength) bytes")
        }
        return lines
    }
}
