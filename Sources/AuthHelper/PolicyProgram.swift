import Glibc
import IPC

/// The deployer's policy program (`--auth-program`), spoken to in JSON lines over one stream
/// socket that is its stdin and stdout. Started by the helper before the helper's seccomp filter
/// (with no_new_privs), so the program itself runs without the helper's filter (its own only
/// refuses setsid and setpgid) and the helper keeps no right to start programs. When the helper can change users, the program runs as a user of its own
/// (`--auth-program-user`, started before the helper's own change), so it cannot read the users
/// file or the JWT key the helper's user reads, nor signal or trace the helper; otherwise as the
/// helper's user. Because it runs nearly unfiltered, it gets nothing else of the helper's: every
/// descriptor above 2 is closed (it never holds the helper's channels to the broker or the
/// supervisor), its environment is only PATH and LANG, its stderr is a pipe the helper reads and
/// logs escaped, and it shares the helper's session, which has no controlling terminal. When it
/// dies or hangs, the helper exits and the supervisor starts both again (killing the helper's
/// process group, which the program is in and cannot leave: setsid and setpgid fail for it).
/// When the helper dies, the supervisor kills that group; a program of the helper's own user
/// also gets SIGKILL from the kernel (PR_SET_PDEATHSIG, not delivered across users).
/// - Parameters:
///   - descriptor: the helper's end of the socket (non-blocking).
///   - errorDescriptor: the read end of the program's stderr (non-blocking), -1 once it ended.
///   - pid: the program's process id.
final class PolicyProgram {
    let descriptor: Int32
    private(set) var errorDescriptor: Int32
    let pid: pid_t
    private var outbox: [UInt8] = []
    private var inbox: [UInt8] = []
    private var errorInbox: [UInt8] = []
    static let maxLineLength = 64 * 1024
    /// A stderr line longer than this is logged in pieces of this size.
    static let maxLogLineLength = 4096

    private init(descriptor: Int32, errorDescriptor: Int32, pid: pid_t) {
        self.descriptor = descriptor
        self.errorDescriptor = errorDescriptor
        self.pid = pid
    }

    deinit {
        close(descriptor)
        if errorDescriptor >= 0 { close(errorDescriptor) }
    }

    /// Starts `path` (no arguments; environment PATH and LANG only) with the socket as fd 0 and 1,
    /// a pipe to the helper as fd 2, and no other descriptor.
    /// - Parameter user: the program's own user (`--auth-program-user`) when the helper can
    ///   still change users (it is called before the helper's own change); nil: the helper's
    ///   user (it cannot change users).
    static func start(path: String, user: RoleSpawner.ProgramUser?) throws(AuthError) -> PolicyProgram {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw AuthError("socketpair for the policy program failed: \(String(cString: strerror(errno)))")
        }
        var errorPipe: [Int32] = [-1, -1]
        guard pipe(&errorPipe) == 0 else {
            let text = String(cString: strerror(errno))
            close(fds[0])
            close(fds[1])
            throw AuthError("pipe for the policy program's stderr failed: \(text)")
        }
        // pipe2 is not in Swift's Glibc; the helper is one thread, so no spawn races this (and
        // F_SETFD fails only on a descriptor that is not open).
        for end in errorPipe { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        // With 0–2 open (the role spawner sees to it) these are 3 or more; should one be lower, it
        // is moved up, since the spawn copies each to 0–2 and one must not overwrite another.
        for index in 0..<2 where fds[index] < 3 {
            let moved = fcntl(fds[index], F_DUPFD_CLOEXEC, 3)
            if moved >= 0 { close(fds[index]); fds[index] = moved }
        }
        for index in 0..<2 where errorPipe[index] < 3 {
            let moved = fcntl(errorPipe[index], F_DUPFD_CLOEXEC, 3)
            if moved >= 0 { close(errorPipe[index]); errorPipe[index] = moved }
        }
        defer {
            close(fds[1])
            close(errorPipe[1])
        }
        let pid: pid_t
        do {
            // fork + execve in C, so that the child can change user (posix_spawn cannot). The
            // helper is single-threaded here: it starts no thread at all (one poll loop; the
            // verifier and the logger start none either; /proc/PID/task of a running helper
            // holds one entry), and this runs from Sandbox.apply before the helper's change of
            // user and its seccomp filter. The child makes only async-signal-safe calls anyway.
            pid = try RoleSpawner.spawnProgram(
                executable: path, arguments: [path], stream: fds[1], stderr: errorPipe[1],
                environment: RoleSpawner.minimalEnvironment(), user: user)
        } catch {
            close(fds[0])
            close(errorPipe[0])
            throw AuthError("cannot start the policy program \(path): \(error)")
        }
        for end in [fds[0], errorPipe[0]] { _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK) }
        return PolicyProgram(descriptor: fds[0], errorDescriptor: errorPipe[0], pid: pid)
    }

    /// Reads what the program has written to its stderr and returns the complete lines (pieces of
    /// at most ``maxLogLineLength`` bytes); at EOF, the rest too, and the pipe is closed.
    func readErrorLines() -> [String] {
        guard errorDescriptor >= 0 else { return [] }
        var chunk = [UInt8](repeating: 0, count: 4096)
        var ended = false
        // Bounded: at most 64 KiB per call, so a chatty program cannot hold up the answers.
        for _ in 0..<16 {
            let count = chunk.withUnsafeMutableBytes { read(errorDescriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            if count <= 0 {
                ended = true
                break
            }
            errorInbox += chunk[0..<count]
        }
        var lines: [String] = []
        while !errorInbox.isEmpty {
            if let newline = errorInbox.firstIndex(of: 0x0a), newline <= Self.maxLogLineLength {
                lines.append(String(decoding: errorInbox[..<newline], as: UTF8.self))
                errorInbox.removeFirst(newline + 1)
            } else if errorInbox.count >= Self.maxLogLineLength {
                lines.append(String(decoding: errorInbox[..<Self.maxLogLineLength], as: UTF8.self))
                errorInbox.removeFirst(Self.maxLogLineLength)
            } else if ended {
                lines.append(String(decoding: errorInbox, as: UTF8.self))
                errorInbox.removeAll()
            } else {
                break
            }
        }
        if ended {
            close(errorDescriptor)
            errorDescriptor = -1
        }
        return lines
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
