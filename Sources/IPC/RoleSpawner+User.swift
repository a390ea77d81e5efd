public import Glibc
import CShim

/// The auth helper's policy program under a user of its own (issue 16): started with fork and a
/// change of user in C (`cshim_spawn_program_as`) while the helper still may change users, since
/// posix_spawn cannot change the child's user. A compromised program then cannot read what the
/// helper's user must read (the users file, the JWT key), nor signal, trace or read the helper.
extension RoleSpawner {
    /// A user to start a program as (never root).
    public struct ProgramUser: Sendable, Equatable {
        public var name: String
        public var uid: uid_t
        public var gid: gid_t
        public init(name: String, uid: uid_t, gid: gid_t) {
            self.name = name
            self.uid = uid
            self.gid = gid
        }
    }

    /// Starts `executable` like ``spawnProgram(executable:arguments:stdin:stdout:stderr:environment:)``
    /// (the socket `stream` as 0 and 1, `stderr` as 2, nothing else; `environment` only; signals
    /// at their defaults, empty mask; the caller's session and process group), but by fork and
    /// execve so that the child can, first, become `user` (setgroups(0), setresgid, setresuid,
    /// checked: root and capabilities cannot be regained). Every child gets no_new_privs, a
    /// seccomp filter under which setsid and setpgid fail with EPERM — so it and everything it
    /// starts stay in this process's group, which the supervisor kills with the helper — and
    /// PR_SET_PDEATHSIG(SIGKILL), which the kernel delivers only while the child has this
    /// process's user. A failure of any step in the child, execve included, is reported here.
    /// - Parameters:
    ///   - user: the user to become; nil: stay this process's user (it cannot change users).
    ///   - stream, stderr: descriptors numbered 3 or more.
    public static func spawnProgram(
        executable: String, arguments: [String], stream: Int32, stderr: Int32, environment: [String], user: ProgramUser?
    ) throws(IPCError) -> pid_t {
        guard !arguments.isEmpty else { throw IPCError(.invalidArgument, "arguments must include argv[0]") }
        if let user, user.uid == 0 || user.gid == 0 {
            throw IPCError(.invalidArgument, "the program's user \(user.name) is root (uid \(user.uid), gid \(user.gid)); name an unprivileged user")
        }
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let envp = environment.map { strdup($0) } + [nil]
        defer { for p in envp { free(p) } }
        var step: Int32 = 0
        var error: Int32 = 0
        let pid = cshim_spawn_program_as(
            executable, argv, envp, stream, stderr, user == nil ? 0 : 1, user?.uid ?? 0, user?.gid ?? 0, &step, &error)
        guard pid > 0 else { throw IPCError.system(Self.programStepName(step, user: user), errno: error) }
        return pid
    }

    /// What failed, for the error message.
    static func programStepName(_ step: Int32, user: ProgramUser?) -> String {
        let who = user.map { "\($0.name) (uid \($0.uid), gid \($0.gid))" } ?? "this user"
        switch step {
        case Int32(CSHIM_PROGRAM_STEP_PIPE): return "pipe2 (for the start report)"
        case Int32(CSHIM_PROGRAM_STEP_FORK): return "fork"
        case Int32(CSHIM_PROGRAM_STEP_SIGNALS): return "resetting the signal mask"
        case Int32(CSHIM_PROGRAM_STEP_SETGROUPS): return "setgroups(0) (needs CAP_SETGID)"
        case Int32(CSHIM_PROGRAM_STEP_SETRESGID): return "setresgid to \(who) (needs CAP_SETGID)"
        case Int32(CSHIM_PROGRAM_STEP_SETRESUID): return "setresuid to \(who) (needs CAP_SETUID)"
        case Int32(CSHIM_PROGRAM_STEP_REGAIN): return "the check that root and capabilities cannot be regained as \(who)"
        case Int32(CSHIM_PROGRAM_STEP_NO_NEW_PRIVS): return "prctl(PR_SET_NO_NEW_PRIVS)"
        case Int32(CSHIM_PROGRAM_STEP_PDEATHSIG): return "prctl(PR_SET_PDEATHSIG)"
        case Int32(CSHIM_PROGRAM_STEP_PARENT): return "the check that the parent still lives"
        case Int32(CSHIM_PROGRAM_STEP_DUP2): return "dup2 of the socket and stderr pipe to 0–2 (each must be 3 or more)"
        case Int32(CSHIM_PROGRAM_STEP_CLOSE): return "closing the descriptors above 2"
        case Int32(CSHIM_PROGRAM_STEP_EXEC): return "execve"
        case Int32(CSHIM_PROGRAM_STEP_FILTER): return "loading the seccomp filter that keeps it in its process group"
        default: return "step \(step)"
        }
    }
}
