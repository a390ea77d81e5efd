import Glibc

// The one place where the system calls a sandboxed role may make are listed, one per line, with
// the reason each is needed. Anything not listed kills the process (SCMP_ACT_KILL_PROCESS; in
// --sandbox-debug mode it traps and the SIGSYS handler names the call first). Native arch only:
// a call through another ABI (i386 `int 0x80`, x32) kills the process (SCMP_FLTATR_ACT_BADARCH).
//
// To find a missing call: run with --sandbox-debug (the broker names the call on stderr) or read
// the kernel audit record (`dmesg | grep type=1326`, field syscall=N), then add it here with why.

/// What the filter does with one system call.
public enum SeccompAction: Sendable, Hashable {
    /// The call is allowed whatever its arguments.
    case allow
    /// Allowed when `argument & mask == value` (other argument values fall to the default action).
    case allowIfMasked(argument: UInt32, mask: UInt64, value: UInt64)
    /// Allowed when the argument is one of `values` (one libseccomp rule per value).
    case allowIfOneOf(argument: UInt32, values: [UInt64])
    /// Allowed when the arguments match one of `alternatives`, each a list of arguments that
    /// must all equal their value (one libseccomp rule per alternative, its comparisons ANDed).
    case allowIfAll(_ alternatives: [[SeccompArgument]])
    /// The call fails with this errno without running: calls libc or the runtime make
    /// speculatively and cope with failing (a soft denial).
    case errno(Int32)

    /// Whether some argument values are allowed to run.
    public var allows: Bool {
        if case .errno = self { return false }
        return true
    }
}

/// One argument comparison of an ``SeccompAction/allowIfAll(_:)`` rule: argument `index`
/// (0-based) equals `value`.
public struct SeccompArgument: Sendable, Hashable {
    public let index: UInt32
    public let value: UInt64

    public init(_ index: UInt32, equals value: UInt64) {
        self.index = index
        self.value = value
    }
}

/// One line of a policy: a system call by its name on this architecture, what happens to it, why.
public struct SeccompRule: Sendable, Hashable {
    public let name: String
    public let action: SeccompAction
    public let why: String
}

/// A call a role must never be able to make (tested by running it in the sandbox).
public struct SeccompRefusal: Sendable, Hashable {
    public let name: String
    public let why: String
}

/// A role's seccomp policy as data: soft denials, the Swift runtime base, the role's own calls,
/// and the calls that must stay refused (never in the allow-list; the tests check both).
/// - Parameters:
///   - role: the role the policy is for, as in `--policy`.
///   - rules: every call with an action other than the default; one rule per call.
///   - mustRefuse: calls that must end in SIGSYS (or the errno of their soft denial).
public struct SeccompPolicy: Sendable {
    public let role: String
    public let rules: [SeccompRule]
    public let mustRefuse: [SeccompRefusal]

    init(role: String, _ sections: [[(String, SeccompAction, why: String)]], mustRefuse: [(String, why: String)]) {
        self.role = role
        rules = (sections + [Self.sanitizerRuntime]).joined().map { SeccompRule(name: $0.0, action: $0.1, why: $0.why) }
        self.mustRefuse = mustRefuse.map { SeccompRefusal(name: $0.0, why: $0.why) }
    }

    /// The policy of a role by name (`broker`, `auth`), or nil.
    public static func named(_ role: String) -> SeccompPolicy? {
        switch role {
        case broker.role: broker
        case auth.role: auth
        case cluster.role: cluster
        default: nil
        }
    }

    /// The rule for `name`, if the policy has one.
    public func rule(_ name: String) -> SeccompRule? {
        rules.first { $0.name == name }
    }

    // Linux constants Glibc does not export (they need _GNU_SOURCE).
    static let cloneThread: UInt64 = 0x0001_0000  // CLONE_THREAD
    static let protExec = UInt64(PROT_EXEC)
    static let solSocket = UInt64(SOL_SOCKET)
    static let soError = UInt64(SO_ERROR)
    static let solTCP = UInt64(IPPROTO_TCP)  // SOL_TCP
    static let tcpNoDelay: UInt64 = 1  // TCP_NODELAY

    /// Soft denials: speculative calls of libc and the Swift runtime get an errno, not death.
    static let softDenials: [(String, SeccompAction, why: String)] = [
        ("open", .errno(EACCES), why: "libc/runtime probes files (locale, zoneinfo, /proc, /sys); nothing to open in the sandbox"),
        ("openat", .errno(EACCES), why: "glibc's open(); same speculative probes (e.g. sysconf reading /sys/devices/system/cpu)"),
        ("stat", .errno(EACCES), why: "speculative file checks by libc"),
        ("lstat", .errno(EACCES), why: "speculative file checks by libc"),
        ("fstat", .errno(EACCES), why: "stdio's first write sizes its buffer with fstat; it copes with failure"),
        ("newfstatat", .errno(EACCES), why: "glibc 2.33+ fstat/stat; stdio buffer sizing, speculative checks"),
        ("statx", .errno(EACCES), why: "newer stat path of libc and the Swift runtime"),
        ("access", .errno(EACCES), why: "speculative existence checks by libc"),
        ("faccessat", .errno(EACCES), why: "glibc's access()"),
        ("faccessat2", .errno(EACCES), why: "glibc's access() on newer kernels"),
        ("readlink", .errno(EACCES), why: "runtime looks up /proc/self/exe for diagnostics"),
        ("readlinkat", .errno(EACCES), why: "glibc's readlink()"),
        ("clone3", .errno(ENOSYS), why: "glibc tries clone3 for pthread_create; ENOSYS makes it fall back to clone, whose flags we can check"),
    ]

    /// The Swift runtime, glibc and threads: needed by every role.
    static let runtimeBase: [(String, SeccompAction, why: String)] = [
        ("futex", .allow, why: "locks, condition variables, swift_once, thread joins"),
        ("mmap", .allowIfMasked(argument: 2, mask: protExec, value: 0), why: "malloc of large blocks, thread stacks; never PROT_EXEC"),
        ("mprotect", .allowIfMasked(argument: 2, mask: protExec, value: 0), why: "thread stack guard pages, malloc arenas; never PROT_EXEC"),
        ("munmap", .allow, why: "free of large blocks, thread stacks"),
        ("mremap", .allow, why: "realloc of large blocks (growing buffers)"),
        ("madvise", .allow, why: "malloc trimming, freeing exited thread stacks"),
        ("brk", .allow, why: "malloc's main arena"),
        ("clock_gettime", .allow, why: "NIO deadlines and the protocol clock (vDSO, but the syscall is the fallback)"),
        ("clock_nanosleep", .allow, why: "sleeping: glibc's nanosleep/usleep use this call"),
        ("getrandom", .allow, why: "Swift hashing seeds, random ids and tokens"),
        ("rt_sigprocmask", .allow, why: "glibc blocks signals around thread creation and in abort paths"),
        ("rt_sigreturn", .allow, why: "return from signal handlers, incl. glibc's setxid signal racing the filter load"),
        ("restart_syscall", .allow, why: "the kernel resumes a poll/futex/nanosleep with a timeout this way after SIGSTOP/SIGCONT, a cgroup freeze or ptrace"),
        ("sched_yield", .allow, why: "spin locks in the runtime and NIO"),
        ("gettid", .allow, why: "Swift's Mutex on Linux names its owner by thread id (PI futex); NIO scheduled tasks take it"),
        ("set_robust_list", .allow, why: "every new glibc thread registers its robust futex list"),
        ("rseq", .allow, why: "every new glibc 2.35+ thread registers restartable sequences"),
        ("clone", .allowIfMasked(argument: 0, mask: cloneThread, value: cloneThread), why: "pthread_create; only with CLONE_THREAD, so no new process"),
        ("exit", .allow, why: "a thread ends"),
        ("exit_group", .allow, why: "the process ends"),
    ]

    /// The broker: NIO HTTP + WebSocket on descriptors it receives from the supervisor.
    static let brokerCalls: [(String, SeccompAction, why: String)] = [
        ("recvmsg", .allow, why: "frames and connection fds from the supervisor (SCM_RIGHTS)"),
        ("sendmsg", .allow, why: "ready and stats frames to the supervisor"),
        ("epoll_wait", .allow, why: "NIO selector"),
        ("epoll_pwait", .allow, why: "NIO selector (glibc's epoll_wait on some builds)"),
        ("epoll_ctl", .allow, why: "NIO registers adopted sockets"),
        ("timerfd_settime", .allow, why: "NIO scheduled tasks (timeouts, ticks)"),
        ("read", .allow, why: "socket input, NIO's eventfd/timerfd"),
        ("pread64", .allow, why: "its resident memory for the metrics: /proc/self/statm, opened before the filter, re-read from offset 0"),
        ("write", .allow, why: "socket output, eventfd wake-ups, log lines on stderr"),
        ("readv", .allow, why: "vectored socket input"),
        ("writev", .allow, why: "NIO's gathering writes"),
        ("close", .allow, why: "closing connections"),
        ("shutdown", .allow, why: "half-close of a connection"),
        ("fcntl", .allowIfOneOf(argument: 1, values: [UInt64(F_GETFD), UInt64(F_SETFD), UInt64(F_GETFL), UInt64(F_SETFL)]),
         why: "NIO sets O_NONBLOCK / FD_CLOEXEC on adopted fds; no F_DUPFD, no locks"),
        ("setsockopt", .allowIfAll([[SeccompArgument(1, equals: solTCP), SeccompArgument(2, equals: tcpNoDelay)]]),
         why: "NIO's ClientBootstrap sets TCP_NODELAY on each adopted fd (the only option strace shows); no TCP_ULP, no SOL_TLS (kernel TLS)"),
        ("getsockopt", .allowIfAll([[SeccompArgument(1, equals: solSocket), SeccompArgument(2, equals: soError)]]),
         why: "NIO reads SO_ERROR when epoll reports a reset or an error on a connection; nothing else"),
        ("getsockname", .allow, why: "NIO's local address of an adopted fd"),
        ("getpeername", .allow, why: "NIO's remote address of an adopted fd"),
        ("prlimit64", .allowIfAll([[SeccompArgument(0, equals: 0), SeccompArgument(1, equals: UInt64(RLIMIT_NOFILE.rawValue))]]),
         why: "glibc's getrlimit/setrlimit (pid 0): the descriptor budget follows concurrent_limit on SIGHUP (soft limit, up to the hard limit); this process (pid 0) and RLIMIT_NOFILE only"),
        ("poll", .allow, why: "the auth-verdict reader thread waits on the auth helper's channel"),
        ("ppoll", .allow, why: "glibc's poll() on some builds (auth-verdict reader thread)"),
        ("mlock", .allow, why: "a reload's TLS private key is put together in memory locked out of swap (SecretBytes); bounded by RLIMIT_MEMLOCK"),
        ("munlock", .allow, why: "that memory is unlocked, wiped and unmapped when the key is replaced"),
    ]

    /// The cluster role: the broker's calls (NIO, its channels) and the two it needs to reach
    /// PostgreSQL itself. Nothing else new: no bind, no listen, no accept, no files.
    static let clusterCalls: [(String, SeccompAction, why: String)] = brokerCalls + [
        ("socket", .allowIfOneOf(argument: 0, values: [UInt64(AF_INET), UInt64(AF_INET6)]),
         why: "a TCP connection to the database (NIO's ClientBootstrap); IPv4 and IPv6 only: no AF_UNIX, no netlink, no packet sockets"),
        ("connect", .allow, why: "to the database's numeric address (the supervisor resolved the name); systemd's IPAddressAllow= limits where"),
        ("rt_sigaction", .allowIfOneOf(argument: 0, values: [UInt64(SIGPIPE)]),
         why: "NIO ignores SIGPIPE (signal(SIGPIPE, SIG_IGN)) when it makes its first socket, which here is after the filter; SIGPIPE only"),
    ]

    /// Soft denials of the auth helper: the broker's, except `open`/`openat`, which the helper
    /// may use read-only (it re-reads its policy files on reload).
    static let authSoftDenials: [(String, SeccompAction, why: String)] =
        softDenials.filter { $0.0 != "open" && $0.0 != "openat" }

    // O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND: the open must be read-only and create nothing.
    static let writeOpenMask = UInt64(O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND)

    /// The auth helper: one poll loop over its channels (and the policy program's socket), the
    /// policy files opened read-only; no network, no new processes after the filter.
    static let authCalls: [(String, SeccompAction, why: String)] = [
        ("open", .allowIfMasked(argument: 1, mask: writeOpenMask, value: 0), why: "re-read the users file on reload; read-only, never creates"),
        ("openat", .allowIfMasked(argument: 2, mask: writeOpenMask, value: 0), why: "glibc's open(): re-read the users file on reload; read-only"),
        ("recvmsg", .allow, why: "queries from the broker, reload from the supervisor"),
        ("sendmsg", .allow, why: "verdicts to the broker"),
        ("poll", .allow, why: "the helper's one loop over its channels and the program's socket"),
        ("ppoll", .allow, why: "glibc's poll() on some builds"),
        ("read", .allow, why: "the policy files, the program's answers"),
        ("write", .allow, why: "JSON lines to the program, log lines on stderr"),
        ("close", .allow, why: "closing a policy file after reading it"),
        ("lseek", .allow, why: "stdio/file reads may seek"),
        ("fcntl", .allowIfOneOf(argument: 1, values: [UInt64(F_GETFD), UInt64(F_SETFD), UInt64(F_GETFL), UInt64(F_SETFL)]),
         why: "O_NONBLOCK on the channels; no F_DUPFD, no locks"),
    ]

    /// Calls no role may make; each is tried in the sandbox by the tests.
    static let commonRefusals: [(String, why: String)] = [
        ("execve", why: "no new programs"),
        ("execveat", why: "no new programs"),
        ("fork", why: "no new processes"),
        ("vfork", why: "no new processes"),
        ("socket", why: "no new sockets: connections arrive from the supervisor"),
        ("socketpair", why: "no new sockets"),
        ("connect", why: "no outgoing connections"),
        ("bind", why: "no listening"),
        ("listen", why: "no listening"),
        ("accept", why: "only the supervisor accepts"),
        ("accept4", why: "only the supervisor accepts"),
        ("ptrace", why: "no debugging other processes"),
        ("process_vm_readv", why: "no reading other processes' memory"),
        ("process_vm_writev", why: "no writing other processes' memory"),
        ("setuid", why: "no identity changes"),
        ("setgid", why: "no identity changes"),
        ("setresuid", why: "no identity changes"),
        ("setresgid", why: "no identity changes"),
        ("setgroups", why: "no identity changes"),
        ("capset", why: "no capability changes"),
        ("chroot", why: "no file system view changes"),
        ("pivot_root", why: "no file system view changes"),
        ("mount", why: "no mounts"),
        ("umount2", why: "no mounts"),
        ("unshare", why: "no namespaces"),
        ("setns", why: "no namespaces"),
        ("bpf", why: "no BPF programs"),
        ("perf_event_open", why: "kernel attack surface"),
        ("io_uring_setup", why: "io_uring bypasses seccomp for its operations"),
        ("io_uring_enter", why: "io_uring bypasses seccomp for its operations"),
        ("userfaultfd", why: "classic kernel exploit helper"),
        ("keyctl", why: "kernel keyrings"),
        ("add_key", why: "kernel keyrings"),
        ("kexec_load", why: "replacing the kernel"),
        ("init_module", why: "loading kernel modules"),
        ("finit_module", why: "loading kernel modules"),
        ("delete_module", why: "unloading kernel modules"),
    ]

    /// The broker role.
    public static let broker = SeccompPolicy(
        role: "broker",
        [softDenials, runtimeBase, brokerCalls],
        mustRefuse: commonRefusals + [
            ("open", why: "the broker reads no files (soft: EACCES)"),
            ("openat", why: "the broker reads no files (soft: EACCES)"),
            ("clone3", why: "forces glibc onto clone, whose flags the filter checks (soft: ENOSYS)"),
        ])

    /// The cluster role (`--cluster`).
    public static let cluster = SeccompPolicy(
        role: "cluster",
        [softDenials, runtimeBase, clusterCalls],
        mustRefuse: commonRefusals.filter { $0.0 != "socket" && $0.0 != "connect" } + [
            ("open", why: "the cluster role reads no files (soft: EACCES)"),
            ("openat", why: "the cluster role reads no files (soft: EACCES)"),
            ("clone3", why: "forces glibc onto clone, whose flags the filter checks (soft: ENOSYS)"),
        ])

    /// The auth helper role.
    public static let auth = SeccompPolicy(
        role: "auth",
        [authSoftDenials, runtimeBase, authCalls],
        mustRefuse: commonRefusals + [
            ("clone3", why: "forces glibc onto clone, whose flags the filter checks (soft: ENOSYS)"),
        ])
}
