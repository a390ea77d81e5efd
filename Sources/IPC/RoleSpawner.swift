public import Glibc
import CShim

/// Starts a role process (usually this same binary with a role argument) with posix_spawn(3) and
/// an explicit descriptor map, so the child gets exactly stdin = /dev/null, the inherited
/// stdout/stderr and the mapped channels — nothing else leaks, and no fork() happens in a
/// threaded Swift process.
public enum RoleSpawner {
    /// Parent descriptors are first duplicated (close-on-exec) to numbers at or above this, so the
    /// dup2 actions cannot clobber each other and never become dup2(fd, fd) (which would leave
    /// FD_CLOEXEC set).
    static let scratchFDBase: Int32 = 100

    /// Signals reset to their default action in the child.
    static let defaultSignals: [Int32] = [SIGPIPE, SIGCHLD, SIGHUP, SIGTERM, SIGINT]

    /// The PATH a child gets when this process has none.
    public static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// The environment a child of the service gets instead of this process's: `PATH` (this
    /// process's, or ``defaultPath``), `LANG` when set, and the variables named in `passing`
    /// when set — nothing else, so no secret or setting in the supervisor's environment (a
    /// token in a unit's `Environment=`, `LD_PRELOAD`, `NOTIFY_SOCKET`, `CREDENTIALS_DIRECTORY`)
    /// reaches a process that reads client bytes or runs the deployer's policy program.
    /// - Parameter passing: further names to copy when set (for example `JOURNAL_STREAM`, which
    ///   tells a role its stderr is the journal).
    public static func minimalEnvironment(passing: [String] = []) -> [String] {
        var entries = ["PATH=" + (getenv("PATH").map { String(cString: $0) } ?? defaultPath)]
        for name in ["LANG"] + passing {
            if let value = getenv(name) { entries.append(name + "=" + String(cString: value)) }
        }
        return entries
    }

    /// Spawns `executable` and returns its pid (reap it with waitpid).
    /// - Parameters:
    ///   - executable: an absolute path, for example `/proc/self/exe` (no PATH search).
    ///   - arguments: the whole argv, including argv[0].
    ///   - fdMap: each `parent` descriptor appears in the child as `child` (3 or more, each used
    ///     once); every other descriptor above 2 is closed in the child.
    ///   - environment: `NAME=value` entries; nil passes this process's environment on.
    ///   - newProcessGroup: start the child in a process group of its own (pgid = its pid), so
    ///     that it and anything it starts can be signalled together.
    ///   - newSession: start the child in a session of its own (setsid: it leads the session and
    ///     a process group, pgid = sid = its pid, and has no controlling terminal, nor has
    ///     anything it starts). Implies `newProcessGroup`.
    ///   - stderr: the child's stderr instead of this process's (e.g. a pipe to relay).
    /// The child also starts with an empty signal mask and SIGPIPE, SIGCHLD, SIGHUP, SIGTERM and
    /// SIGINT at their default actions.
    public static func spawn(
        executable: String, arguments: [String], fdMap: [(parent: Int32, child: Int32)], environment: [String]? = nil,
        newProcessGroup: Bool = false, newSession: Bool = false, stderr: Int32? = nil
    ) throws(IPCError) -> pid_t {
        guard !arguments.isEmpty else {
            throw IPCError(.invalidArgument, "arguments must include argv[0]")
        }
        var seenChildren = Set<Int32>()
        for entry in fdMap {
            guard entry.child >= 3, entry.child < scratchFDBase else {
                throw IPCError(.invalidArgument, "child descriptor \(entry.child) is outside 3..<\(scratchFDBase); 0–2 are stdin (/dev/null) and the inherited stdout/stderr")
            }
            guard entry.parent >= 0 else {
                throw IPCError(.invalidArgument, "parent descriptor \(entry.parent) for child \(entry.child) is invalid")
            }
            guard seenChildren.insert(entry.child).inserted else {
                throw IPCError(.invalidArgument, "child descriptor \(entry.child) is mapped twice")
            }
        }

        var scratch: [Int32] = []
        defer { for fd in scratch { _ = close(fd) } }
        for entry in fdMap {
            let high = fcntl(entry.parent, F_DUPFD_CLOEXEC, scratchFDBase)
            guard high >= 0 else { throw IPCError.system("fcntl(\(entry.parent), F_DUPFD_CLOEXEC)") }
            scratch.append(high)
        }

        var actions = posix_spawn_file_actions_t()
        var rc = posix_spawn_file_actions_init(&actions)
        guard rc == 0 else { throw IPCError.system("posix_spawn_file_actions_init", errno: rc) }
        defer { posix_spawn_file_actions_destroy(&actions) }

        rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        guard rc == 0 else { throw IPCError.system("posix_spawn_file_actions_addopen(/dev/null)", errno: rc) }
        for (high, entry) in zip(scratch, fdMap) {
            rc = posix_spawn_file_actions_adddup2(&actions, high, entry.child)  // dup2 clears FD_CLOEXEC
            guard rc == 0 else { throw IPCError.system("posix_spawn_file_actions_adddup2", errno: rc) }
        }
        if let stderr {
            let high = fcntl(stderr, F_DUPFD_CLOEXEC, scratchFDBase)
            guard high >= 0 else { throw IPCError.system("fcntl(\(stderr), F_DUPFD_CLOEXEC)") }
            scratch.append(high)
            rc = posix_spawn_file_actions_adddup2(&actions, high, 2)
            guard rc == 0 else { throw IPCError.system("posix_spawn_file_actions_adddup2(stderr)", errno: rc) }
        }
        rc = cshim_spawn_addclosefrom(&actions, (fdMap.map(\.child).max() ?? 2) + 1)
        guard rc == 0 else { throw IPCError.system("posix_spawn_file_actions_addclosefrom_np", errno: rc) }

        return try launch(
            executable: executable, arguments: arguments, actions: &actions, environment: environment,
            newProcessGroup: newProcessGroup, newSession: newSession)
    }

    /// Spawns a program (not a role) with `stdin`, `stdout` and `stderr` as its descriptors 0, 1
    /// and 2 and every other descriptor closed, whatever its close-on-exec flag: the auth
    /// helper's policy program, which must not hold the helper's channels. Unlike
    /// ``spawn(executable:arguments:fdMap:environment:newProcessGroup:newSession:stderr:)`` it
    /// needs no spare descriptor numbers (the caller may run with a low RLIMIT_NOFILE), so each
    /// source must be 3 or more (never one of the numbers it is copied to).
    /// - Parameters:
    ///   - executable: an absolute path (no PATH search).
    ///   - arguments: the whole argv, including argv[0].
    ///   - environment: `NAME=value` entries, the child's whole environment.
    /// The child stays in this process's session and process group, with an empty signal mask
    /// and the signals of ``defaultSignals`` at their default actions.
    public static func spawnProgram(
        executable: String, arguments: [String], stdin: Int32, stdout: Int32, stderr: Int32, environment: [String]
    ) throws(IPCError) -> pid_t {
        guard !arguments.isEmpty else {
            throw IPCError(.invalidArgument, "arguments must include argv[0]")
        }
        for source in [stdin, stdout, stderr] where source < 3 {
            throw IPCError(.invalidArgument, "descriptor \(source) cannot be copied to 0–2 without clobbering one of them; pass one numbered 3 or more")
        }
        var actions = posix_spawn_file_actions_t()
        var rc = posix_spawn_file_actions_init(&actions)
        guard rc == 0 else { throw IPCError.system("posix_spawn_file_actions_init", errno: rc) }
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (source, target) in [(stdin, Int32(0)), (stdout, 1), (stderr, 2)] {
            rc = posix_spawn_file_actions_adddup2(&actions, source, target)  // dup2 clears FD_CLOEXEC
            guard rc == 0 else { throw IPCError.system("posix_spawn_file_actions_adddup2(\(source), \(target))", errno: rc) }
        }
        rc = cshim_spawn_addclosefrom(&actions, 3)
        guard rc == 0 else { throw IPCError.system("posix_spawn_file_actions_addclosefrom_np", errno: rc) }
        return try launch(
            executable: executable, arguments: arguments, actions: &actions, environment: environment,
            newProcessGroup: false, newSession: false)
    }

    /// The attributes every child gets (signals; group or session) and the posix_spawn call.
    private static func launch(
        executable: String, arguments: [String], actions: inout posix_spawn_file_actions_t, environment: [String]?,
        newProcessGroup: Bool, newSession: Bool
    ) throws(IPCError) -> pid_t {
        var attributes = posix_spawnattr_t()
        var rc = posix_spawnattr_init(&attributes)
        guard rc == 0 else { throw IPCError.system("posix_spawnattr_init", errno: rc) }
        defer { posix_spawnattr_destroy(&attributes) }

        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in defaultSignals { sigaddset(&defaults, signal) }
        rc = posix_spawnattr_setsigmask(&attributes, &emptyMask)
        guard rc == 0 else { throw IPCError.system("posix_spawnattr_setsigmask", errno: rc) }
        rc = posix_spawnattr_setsigdefault(&attributes, &defaults)
        guard rc == 0 else { throw IPCError.system("posix_spawnattr_setsigdefault", errno: rc) }
        // setsid makes the child a process group leader too; setpgid(0, 0) after it would fail.
        if newProcessGroup && !newSession {
            rc = posix_spawnattr_setpgroup(&attributes, 0)
            guard rc == 0 else { throw IPCError.system("posix_spawnattr_setpgroup", errno: rc) }
        }
        let groupFlag = newSession ? cshim_spawn_setsid_flag() : newProcessGroup ? POSIX_SPAWN_SETPGROUP : 0
        rc = posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | groupFlag))
        guard rc == 0 else { throw IPCError.system("posix_spawnattr_setflags", errno: rc) }

        let argv = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let envp = environment.map { $0.map { strdup($0) } + [nil] }
        defer { for p in envp ?? [] { free(p) } }

        var pid: pid_t = 0
        if let envp {
            rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        } else {
            rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        }
        guard rc == 0 else { throw IPCError.system("posix_spawn(\(executable))", errno: rc) }
        return pid
    }
}
