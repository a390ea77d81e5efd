import Glibc

/// What a role's sandbox consists of; the executable builds it from the command line and the
/// supervisor's `hello`.
/// - Parameters:
///   - user: the user to become when the process may change user (`--user`, default `_peerjs`).
///   - chrootDirectory: the empty root-owned directory to chroot into (`--chroot`); nil: none,
///     allowed for the auth helper only. When the process can drop privileges, a missing or
///     unsuitable directory is an error, never a reason to skip the drop.
///   - openFiles: the wanted RLIMIT_NOFILE (capped at the hard limit).
///   - seccomp: the role's system call policy.
///   - debug: trap instead of kill and name the forbidden call on stderr (`--sandbox-debug`).
public struct SandboxPolicy: Sendable {
    public static let defaultUser = "_peerjs"
    public static let defaultChrootDirectory = "/run/peerjs/empty"

    public var user: String
    public var chrootDirectory: String?
    public var openFiles: UInt64
    public var seccomp: SeccompPolicy
    public var debug: Bool

    public init(
        user: String = SandboxPolicy.defaultUser, chrootDirectory: String? = SandboxPolicy.defaultChrootDirectory,
        openFiles: UInt64, seccomp: SeccompPolicy, debug: Bool = false
    ) {
        self.user = user
        self.chrootDirectory = chrootDirectory
        self.openFiles = openFiles
        self.seccomp = seccomp
        self.debug = debug
    }
}

/// What ``Sandbox/apply(_:)`` did, for the role's log (written after the fact: the sandbox
/// itself logs nothing).
/// - Parameters:
///   - openFiles: the RLIMIT_NOFILE in force.
///   - identity: the uid and gid dropped to, or nil when the drop was skipped.
///   - skipped: why chroot and the user change were skipped, or nil.
public struct SandboxReport: Sendable, Equatable {
    public var openFiles: UInt64
    public var identity: (uid: UInt32, gid: UInt32)?
    public var skipped: String?

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.openFiles == rhs.openFiles && lhs.identity?.uid == rhs.identity?.uid
            && lhs.identity?.gid == rhs.identity?.gid && lhs.skipped == rhs.skipped
    }
}

/// Confines the calling process, in the order of CONVENTIONS.md §B: rlimits → chroot + chdir →
/// setgroups/setresgid/setresuid (+ check root cannot be regained) → capabilities cleared →
/// no_new_privs → seccomp with thread sync. Call it once threads exist and before any untrusted
/// byte is read; afterwards only calls in the policy work. A process that cannot drop must have
/// called ``PrivilegeDrop/dropCapabilitiesBeforeThreads()`` before its first thread started:
/// this checks every thread and refuses otherwise.
public enum Sandbox {
    /// - Parameters:
    ///   - beforeUserChange: runs just before the change of user, while the process may still
    ///     change users (its argument: true), or at the same point when it cannot (false) — the
    ///     auth helper starts its policy program here, under the program's own user.
    ///   - beforeFilter: runs after the user change and no_new_privs, just before the seccomp
    ///     filter (the auth helper primes its JWT verifier here).
    public static func apply(
        _ policy: SandboxPolicy, beforeUserChange: (_ canChangeUser: Bool) throws(SandboxError) -> Void = { _ in },
        beforeFilter: () throws(SandboxError) -> Void = {}
    ) throws(SandboxError) -> SandboxReport {
        let openFiles = try PrivilegeDrop.applyLimits(openFiles: policy.openFiles)
        var report = SandboxReport(openFiles: openFiles, identity: nil, skipped: nil)

        let capabilities = try PrivilegeDrop.effectiveCapabilities()
        if !PrivilegeDrop.canDrop(capabilities: capabilities) {
            // Fails closed: uid 0 without the means to leave it is not "nothing to drop".
            guard getuid() != 0, geteuid() != 0 else {
                throw SandboxError(.capabilities, "running as root without CAP_SETUID and CAP_SYS_CHROOT, so the \(policy.seccomp.role) cannot change to user \(policy.user); start peerjs as root with its capabilities, or as an unprivileged user")
            }
            report.skipped = "not privileged (no CAP_SETUID and CAP_SYS_CHROOT): chroot and the change to user \(policy.user) skipped; capabilities dropped in every thread, no_new_privs and seccomp still apply"
            try beforeUserChange(false)
        } else if let directory = policy.chrootDirectory {
            // Fails closed: a missing directory is refused, never a reason to skip the drop.
            guard try PrivilegeDrop.checkEmptyRoot(directory) else {
                throw SandboxError(.chroot, PrivilegeDrop.missingRootMessage(directory))
            }
            let ids = try PrivilegeDrop.lookUp(user: policy.user, role: policy.seccomp.role)  // NSS needs /etc: before chroot
            try beforeUserChange(true)
            try PrivilegeDrop.enterRoot(directory)
            try PrivilegeDrop.become(uid: ids.uid, gid: ids.gid)
            report.identity = (ids.uid, ids.gid)
        } else if policy.seccomp.role == SeccompPolicy.auth.role {
            // No chroot (the auth helper reads its policy files): only the change of user.
            let ids = try PrivilegeDrop.lookUp(user: policy.user, role: policy.seccomp.role)
            try beforeUserChange(true)
            try PrivilegeDrop.become(uid: ids.uid, gid: ids.gid)
            report.identity = (ids.uid, ids.gid)
        } else {
            throw SandboxError(.chroot, "the \(policy.seccomp.role) can drop privileges but was given no chroot directory; pass --chroot")
        }
        try PrivilegeDrop.clearCapabilities()
        try PrivilegeDrop.setNotDumpable()  // again: the change of user reset it to fs.suid_dumpable
        // The calling thread's sets are empty now; the other threads' must be too (they were
        // emptied before they started, or by the change of user).
        if report.identity == nil { try PrivilegeDrop.checkNoThreadHoldsCapabilities() }
        try PrivilegeDrop.setNoNewPrivileges()
        try beforeFilter()
        try SeccompFilter.load(policy.seccomp, debug: policy.debug)
        return report
    }
}
