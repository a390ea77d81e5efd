import CShim
public import Glibc

/// The privilege half of the sandbox (OpenSSH privsep order): resource limits, then — when the
/// process holds the capabilities to do so — chroot to an empty root-owned directory and the
/// change to the role's user, checked by trying to regain root.
public enum PrivilegeDrop {
    // Capability numbers (linux/capability.h).
    static let capSetgid: UInt64 = 1 << 6
    static let capSetuid: UInt64 = 1 << 7
    static let capSysChroot: UInt64 = 1 << 18

    /// The most memory a role may lock (RLIMIT_MEMLOCK, soft and hard): the broker locks one TLS
    /// key (at most about 1 MiB of chunks) and, while it grows, its next mapping; nothing else.
    /// Without the cap, a compromised broker could pin whatever the host's limit allows.
    public static let lockedMemoryLimit: UInt64 = 4 << 20

    /// RLIMIT_CORE 0, RLIMIT_FSIZE 0, RLIMIT_MEMLOCK at most ``lockedMemoryLimit`` (never
    /// raised), and RLIMIT_NOFILE's soft limit = `openFiles`, capped at the hard limit (which
    /// cannot be raised, and is kept). Never RLIMIT_NPROC: threads count against it. Returns the
    /// descriptor limit in force.
    public static func applyLimits(openFiles: UInt64) throws(SandboxError) -> UInt64 {
        // With FSIZE 0 a write to a regular file raises SIGXFSZ; a log redirected to a file must
        // fail quietly (EFBIG) rather than kill the broker.
        signal(SIGXFSZ, SIG_IGN)
        for (resource, name) in [(RLIMIT_CORE, "RLIMIT_CORE"), (RLIMIT_FSIZE, "RLIMIT_FSIZE")] {
            var zero = rlimit(rlim_cur: 0, rlim_max: 0)
            guard setrlimit(__rlimit_resource_t(resource.rawValue), &zero) == 0 else {
                throw SandboxError(.limits, "setrlimit(\(name), 0) failed: \(SandboxError.errnoText())")
            }
        }
        var locked = rlimit()
        if getrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &locked) == 0 {
            let cap = min(locked.rlim_max, rlim_t(lockedMemoryLimit))
            var capped = rlimit(rlim_cur: min(locked.rlim_cur, cap), rlim_max: cap)
            guard setrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &capped) == 0 else {
                throw SandboxError(.limits, "setrlimit(RLIMIT_MEMLOCK, \(cap)) failed: \(SandboxError.errnoText())")
            }
        }
        var current = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &current) == 0 else {
            throw SandboxError(.limits, "getrlimit(RLIMIT_NOFILE) failed: \(SandboxError.errnoText())")
        }
        let wanted = min(rlim_t(max(openFiles, 64)), current.rlim_max)
        // The hard limit stays: the broker raises its soft limit when a reload raises
        // concurrent_limit (it cannot raise a hard limit once it has dropped privileges).
        var limit = rlimit(rlim_cur: wanted, rlim_max: current.rlim_max)
        guard setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
            throw SandboxError(.limits, "setrlimit(RLIMIT_NOFILE, \(wanted)) failed: \(SandboxError.errnoText())")
        }
        return UInt64(wanted)
    }

    /// The calling thread's effective capabilities.
    public static func effectiveCapabilities() throws(SandboxError) -> UInt64 {
        var value: UInt64 = 0
        guard cshim_effective_capabilities(&value) == 0 else {
            throw SandboxError(.capabilities, "capget failed: \(SandboxError.errnoText())")
        }
        return value
    }

    /// Whether this process may chroot and change its user: decided by the effective
    /// capabilities CAP_SETUID and CAP_SYS_CHROOT (root has them; so does an unprivileged
    /// supervisor given them as ambient capabilities), never by uid 0.
    public static func canDrop(capabilities: UInt64) -> Bool {
        capabilities & capSetuid != 0 && capabilities & capSysChroot != 0
    }

    /// The uid and gid of `user`, looked up through NSS (so before chroot). `role` is the
    /// sandboxed role (`broker` or `auth`, as in ``SeccompPolicy/role``); errors name whose user
    /// it is and the flag that sets it.
    public static func lookUp(user: String, role: String = SeccompPolicy.broker.role) throws(SandboxError) -> (uid: uid_t, gid: gid_t) {
        let (whose, option) = role == SeccompPolicy.auth.role ? ("auth helper", "--auth-user") : ("broker", "--user")
        errno = 0
        guard let entry = getpwnam(user) else {
            let reason = errno == 0 ? "no such user" : SandboxError.errnoText()
            throw SandboxError(
                .unknownUser,
                "the \(whose)'s user \"\(user)\" does not exist (\(reason)): create it (e.g. `useradd --system --no-create-home --shell /usr/sbin/nologin \(user)`) or pass another unprivileged user with \(option)")
        }
        let ids = (uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
        guard ids.uid != 0, ids.gid != 0 else {
            throw SandboxError(.unknownUser, "\(option) \(user) is root (uid \(ids.uid), gid \(ids.gid)); name an unprivileged user for the \(whose)")
        }
        return ids
    }

    /// Whether `path` is a directory the broker may be locked into: owned by root, writable by
    /// nobody else, empty. False when it does not exist; throws when it exists but is unsuitable.
    public static func checkEmptyRoot(_ path: String) throws(SandboxError) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return false }
            throw SandboxError(.chroot, "cannot inspect the chroot directory \(path): \(SandboxError.errnoText())")
        }
        let fix = "run `mkdir -p \(path) && chown root:root \(path) && chmod 0555 \(path)` with nothing inside, or pass another --chroot"
        guard info.st_mode & S_IFMT != S_IFLNK else {
            throw SandboxError(.chroot, "the chroot path \(path) is a symbolic link, which is never followed; \(fix)")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw SandboxError(.chroot, "the chroot path \(path) is not a directory; \(fix)")
        }
        guard info.st_uid == 0, info.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
            throw SandboxError(.chroot, "the chroot directory \(path) must be owned by root and writable by nobody else; \(fix)")
        }
        guard let directory = opendir(path) else {
            throw SandboxError(.chroot, "cannot read the chroot directory \(path): \(SandboxError.errnoText())")
        }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." {
                throw SandboxError(.chroot, "the chroot directory \(path) is not empty (it holds \(name)); \(fix)")
            }
        }
        return true
    }

    /// Why a process that can drop privileges refuses to start when its chroot directory is
    /// missing (it would otherwise run as its starter's user, outside any chroot).
    public static func missingRootMessage(_ path: String) -> String {
        "the chroot directory \(path) does not exist, and peerjs can drop privileges (root, or CAP_SETUID and CAP_SYS_CHROOT), so it refuses to run the broker unconfined: create it (`mkdir -p \(path) && chown root:root \(path) && chmod 0555 \(path)`, or tmpfiles.d), start peerjs as root (which creates it), or pass another --chroot"
    }

    /// Creates the broker's chroot directory when nothing is at `path` (a root supervisor):
    /// mkdir (mode 0700; a missing parent 0755), then, through a descriptor opened with
    /// O_DIRECTORY | O_NOFOLLOW — a symlink put in its place is never followed — checks that it
    /// is a directory this user owns and sets root:root, 0555 with fchown/fchmod. Something
    /// already at `path`, or put there between the check and mkdir, is left as it is for
    /// ``checkEmptyRoot(_:)`` to judge. Returns whether the directory was created here.
    public static func createEmptyRoot(_ path: String) throws(SandboxError) -> Bool {
        try createEmptyRoot(path, afterMakingDirectory: {})
    }

    /// - Parameter afterMakingDirectory: runs between mkdir and the open (the tests replace the
    ///   new directory with a symlink here, as a racing local user could).
    static func createEmptyRoot(_ path: String, afterMakingDirectory: () -> Void) throws(SandboxError) -> Bool {
        var info = stat()
        if lstat(path, &info) == 0 { return false }
        guard errno == ENOENT else {
            throw SandboxError(.chroot, "cannot inspect the chroot directory \(path): \(SandboxError.errnoText())")
        }
        let parent = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !parent.isEmpty, access(parent, F_OK) != 0, mkdir(parent, 0o755) != 0, errno != EEXIST {
            throw SandboxError(.chroot, "cannot create \(parent) for the broker's chroot: \(SandboxError.errnoText()); create it or pass --chroot")
        }
        guard mkdir(path, 0o700) == 0 else {
            if errno == EEXIST { return false }  // made meanwhile by someone else: judged, never changed
            throw SandboxError(.chroot, "cannot create the broker's chroot directory \(path): \(SandboxError.errnoText()); create it (root-owned, mode 0555, empty) or pass --chroot")
        }
        afterMakingDirectory()
        let replaced = "the chroot directory \(path) was replaced while it was being created; refusing to use it: check who else may write to \(parent.isEmpty ? "/" : parent), or pass another --chroot"
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw SandboxError(.chroot, "\(replaced) (\(SandboxError.errnoText()))") }
        defer { close(fd) }
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid() else {
            throw SandboxError(.chroot, replaced)
        }
        guard fchown(fd, 0, 0) == 0, fchmod(fd, 0o555) == 0 else {
            throw SandboxError(.chroot, "cannot make the chroot directory \(path) root-owned, mode 0555: \(SandboxError.errnoText()); fix it by hand or pass another --chroot")
        }
        return true
    }

    /// chroot(path) and chdir("/").
    public static func enterRoot(_ path: String) throws(SandboxError) {
        guard chroot(path) == 0 else {
            throw SandboxError(.chroot, "chroot(\(path)) failed: \(SandboxError.errnoText()); start peerjs as root or with CAP_SYS_CHROOT")
        }
        guard chdir("/") == 0 else {
            throw SandboxError(.chroot, "chdir(/) after chroot failed: \(SandboxError.errnoText())")
        }
    }

    /// setgroups(none), setresgid, setresuid (group first, while still allowed), then checks that
    /// root cannot be regained. glibc applies each call to every thread of the process. Without
    /// root but with CAP_SETUID, the saved uid is made 0 first so that the final setresuid
    /// clears every thread's capabilities, as it does for a process started as root.
    public static func become(uid: uid_t, gid: gid_t) throws(SandboxError) {
        // Started unprivileged with capabilities (the packaged supervisor's AmbientCapabilities=):
        // a change between two non-root uids would leave every thread's capabilities in place.
        guard cshim_prepare_capability_drop() == 0 else {
            throw SandboxError(.identity, "setresuid(-1, -1, 0) failed: \(SandboxError.errnoText()); the process needs CAP_SETUID")
        }
        guard cshim_setgroups_none() == 0 else {
            throw SandboxError(.identity, "setgroups(0) failed: \(SandboxError.errnoText()); the process needs CAP_SETGID")
        }
        guard cshim_setresgid(gid) == 0 else {
            throw SandboxError(.identity, "setresgid(\(gid)) failed: \(SandboxError.errnoText()); the process needs CAP_SETGID")
        }
        guard cshim_setresuid(uid) == 0 else {
            throw SandboxError(.identity, "setresuid(\(uid)) failed: \(SandboxError.errnoText()); the process needs CAP_SETUID")
        }
        guard cshim_setresuid(0) != 0, cshim_setresgid(0) != 0 else {
            throw SandboxError(.identity, "root could be regained after dropping to uid \(uid); refusing to run (check for SECBIT_KEEP_CAPS / file capabilities)")
        }
        guard getuid() == uid, geteuid() == uid, getgid() == gid, getegid() == gid else {
            throw SandboxError(.identity, "the user change did not take effect (uid \(geteuid()), gid \(getegid()))")
        }
    }

    /// The first step of a role process (broker, auth helper), before it starts any thread (NIO
    /// event loops, Dispatch, the auth-verdict reader): when it cannot drop privileges (no
    /// CAP_SETUID + CAP_SYS_CHROOT, e.g. an ordinary user given an ambient capability), every
    /// capability goes now — ambient, the bounding set (when CAP_SETPCAP allows), effective,
    /// permitted, inheritable. These sets belong to each thread: capset(2) in ``Sandbox/apply(_:beforeUserChange:beforeFilter:)``
    /// would reach only the calling thread, and threads started earlier would keep what they
    /// inherited. When the process can drop, nothing happens here: the change of user there
    /// clears the capabilities of every thread. Returns whether capabilities were dropped here.
    @discardableResult
    public static func dropCapabilitiesBeforeThreads() throws(SandboxError) -> Bool {
        guard !canDrop(capabilities: try effectiveCapabilities()) else { return false }
        guard cshim_drop_all_capabilities() == 0 else {
            throw SandboxError(.capabilities, "cannot give up the capabilities of a process that cannot change user: \(SandboxError.errnoText()); start peerjs as root, or with CAP_SETUID and CAP_SYS_CHROOT, or without capabilities")
        }
        return true
    }

    /// Throws when any thread of this process still holds a permitted, effective or ambient
    /// capability (read from /proc/self/task/*/status; nothing is checked when /proc is not
    /// there, e.g. inside the chroot).
    public static func checkNoThreadHoldsCapabilities() throws(SandboxError) {
        guard let tasks = opendir("/proc/self/task") else { return }
        defer { closedir(tasks) }
        while let entry = readdir(tasks) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.first?.isNumber == true else { continue }
            let fd = open("/proc/self/task/\(name)/status", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }  // the thread has ended
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while bytes.count < 65536 {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                bytes += buffer[0..<n]
            }
            close(fd)
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n")
            where line.hasPrefix("CapPrm:") || line.hasPrefix("CapEff:") || line.hasPrefix("CapAmb:") {
                let value = line.split(separator: ":", maxSplits: 1).last.map { $0.filter { $0 != " " && $0 != "\t" } } ?? ""
                guard value.allSatisfy({ $0 == "0" }) else {
                    throw SandboxError(.capabilities, "thread \(name) still holds capabilities (\(line.prefix(6)) \(value)); it was started before PrivilegeDrop.dropCapabilitiesBeforeThreads() ran, so refusing to run")
                }
            }
        }
    }

    /// Empties the calling thread's capability sets (a setresuid away from root already did;
    /// a process started with ambient capabilities keeps them across uid changes).
    public static func clearCapabilities() throws(SandboxError) {
        guard cshim_clear_capabilities() == 0 else {
            throw SandboxError(.capabilities, "capset(0) failed: \(SandboxError.errnoText())")
        }
    }

    /// PR_SET_DUMPABLE 0, for every process of the service from its first step: another process
    /// of the same user (the auth helper's policy program when nothing can be dropped, or any
    /// process of the account peerjs runs as) can then neither ptrace it, nor read its
    /// `/proc/PID/environ`, `mem` or `fd`, nor take a descriptor with `pidfd_getfd`; and it never
    /// leaves a core file. A change of user resets the flag to `fs.suid_dumpable`, so the drop
    /// sets it again. Programs it starts (the policy program) begin dumpable again at execve.
    public static func setNotDumpable() throws(SandboxError) {
        guard cshim_not_dumpable() == 0 else {
            throw SandboxError(.capabilities, "prctl(PR_SET_DUMPABLE, 0) failed: \(SandboxError.errnoText())")
        }
    }

    /// PR_SET_NO_NEW_PRIVS: nothing this process could still execute may gain privileges.
    public static func setNoNewPrivileges() throws(SandboxError) {
        guard cshim_no_new_privs() == 0 else {
            throw SandboxError(.noNewPrivileges, "prctl(PR_SET_NO_NEW_PRIVS) failed: \(SandboxError.errnoText())")
        }
    }
}
