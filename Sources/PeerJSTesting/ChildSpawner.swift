import CShim
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Starts a test child the one way every harness needs it: in a process group of its own (so a
/// test can signal it with everything it started), stdin from /dev/null, stdout and stderr into
/// one pipe (or stderr appended to a file), an empty signal mask with default dispositions, and
/// no descriptor above 2 — tests run in parallel and NIO's client sockets are not close-on-exec,
/// so a child would otherwise hold other tests' sockets open.
public enum ChildSpawner {
    /// Spawns `executable` with `arguments` (argv[0] is `executable`) and returns its pid and the
    /// read end of its output pipe (close-on-exec; the caller reads and closes it).
    /// - Parameters:
    ///   - environment: `NAME=value` entries; nil passes this process's environment on.
    ///   - stderrFile: append stderr to this file (created 0644) instead of the pipe.
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String]? = nil, stderrFile: String? = nil
    ) throws -> (pid: Int32, output: Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw HarnessError("pipe failed: errno \(errno)") }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
        if let stderrFile {
            posix_spawn_file_actions_addopen(&actions, 2, stderrFile, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, writeEnd, 2)
        }
        cshim_spawn_addclosefrom(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup($0) } + [nil] }
        defer { (argv + (envp ?? [])).forEach { free($0) } }
        var pid: Int32 = 0
        let result: Int32
        if let envp {
            result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        } else {
            result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        }
        close(writeEnd)
        guard result == 0 else {
            close(readEnd)
            throw HarnessError("posix_spawn \(executable) failed: \(String(cString: strerror(result)))")
        }
        return (pid, readEnd)
    }
}
