import CSeccomp
import Glibc
import Sandbox
import Testing

@Suite("Seccomp policy data")
struct SeccompPolicyTests {
    let policy = SeccompPolicy.broker

    @Test("every system call named in the policy resolves on this architecture")
    func namesResolve() {
        for name in policy.rules.map(\.name) + policy.mustRefuse.map(\.name) {
            #expect(seccomp_syscall_resolve_name(name) >= 0, "\(name) is unknown on this architecture")
        }
    }

    @Test("no call appears twice, in the rules or in the must-refuse list")
    func noDuplicates() {
        let names = policy.rules.map(\.name)
        #expect(Set(names).count == names.count, "duplicates: \(names.filter { n in names.filter { $0 == n }.count > 1 })")
        let refused = policy.mustRefuse.map(\.name)
        #expect(Set(refused).count == refused.count)
    }

    @Test("nothing the broker must be refused is allowed (soft denials excepted: they only return an errno)")
    func allowAndRefuseDisjoint() {
        let allowed = Set(policy.rules.filter { $0.action.allows }.map(\.name))
        let refused = Set(policy.mustRefuse.map(\.name))
        #expect(allowed.isDisjoint(with: refused), "both: \(allowed.intersection(refused).sorted())")
        for name in ["execve", "execveat", "socket", "connect", "bind", "listen", "open", "openat", "ptrace",
                     "process_vm_readv", "setuid", "chroot", "mount", "unshare", "bpf", "io_uring_setup"] {
            #expect(refused.contains(name), "\(name) must be on the must-refuse list")
        }
    }

    @Test("every rule and every refusal says why")
    func reasons() {
        for rule in policy.rules { #expect(!rule.why.isEmpty, "\(rule.name) has no reason") }
        for refusal in policy.mustRefuse { #expect(!refusal.why.isEmpty, "\(refusal.name) has no reason") }
    }

    @Test("speculative file calls get EACCES, clone3 gets ENOSYS, clone needs CLONE_THREAD")
    func softDenials() {
        for name in ["open", "openat", "stat", "newfstatat", "statx", "access", "readlink"] {
            #expect(policy.rule(name)?.action == .errno(13), "\(name)")
        }
        #expect(policy.rule("clone3")?.action == .errno(38))
        #expect(policy.rule("clone")?.action == .allowIfMasked(argument: 0, mask: 0x0001_0000, value: 0x0001_0000))
    }

    @Test("socket options and rlimits by argument: setsockopt SOL_TCP/TCP_NODELAY only, getsockopt SOL_SOCKET/SO_ERROR only, prlimit64 pid 0 and RLIMIT_NOFILE only")
    func argumentRules() {
        #expect(policy.rule("setsockopt")?.action == .allowIfAll([[SeccompArgument(1, equals: 6), SeccompArgument(2, equals: 1)]]))
        #expect(policy.rule("getsockopt")?.action == .allowIfAll([[SeccompArgument(1, equals: 1), SeccompArgument(2, equals: 4)]]))
        #expect(policy.rule("prlimit64")?.action == .allowIfAll([[SeccompArgument(0, equals: 0), SeccompArgument(1, equals: 7)]]))
        #expect(SeccompPolicy.auth.rule("setsockopt") == nil && SeccompPolicy.auth.rule("getsockopt") == nil)
    }

    @Test("the can-drop decision is made on capabilities, not on uid")
    func dropDecision() {
        #expect(PrivilegeDrop.canDrop(capabilities: (1 << 7) | (1 << 18)))
        #expect(!PrivilegeDrop.canDrop(capabilities: 1 << 7))
        #expect(!PrivilegeDrop.canDrop(capabilities: 0))
    }

    @Test("the auth policy: names resolve, no duplicates, no network or new programs, files read-only")
    func authPolicy() {
        let auth = SeccompPolicy.auth
        let names = auth.rules.map(\.name)
        #expect(Set(names).count == names.count)
        for name in names + auth.mustRefuse.map(\.name) {
            #expect(seccomp_syscall_resolve_name(name) >= 0, "\(name) is unknown on this architecture")
        }
        for rule in auth.rules { #expect(!rule.why.isEmpty, "\(rule.name) has no reason") }
        let allowed = Set(auth.rules.filter { $0.action.allows }.map(\.name))
        let refused = Set(auth.mustRefuse.map(\.name))
        #expect(allowed.isDisjoint(with: refused))
        for name in ["socket", "connect", "execve", "fork", "bind", "ptrace"] { #expect(refused.contains(name)) }
        // O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND must be masked out: read-only opens only.
        #expect(auth.rule("openat")?.action == .allowIfMasked(argument: 2, mask: 0o3 | 0o100 | 0o1000 | 0o2000, value: 0))
        #expect(SeccompPolicy.named("auth")?.role == "auth")
    }

    @Test("the cluster policy: the broker's calls plus TCP sockets and connect; no listening, no files, no other sockets or signal handlers")
    func clusterPolicy() {
        let cluster = SeccompPolicy.cluster
        let names = cluster.rules.map(\.name)
        #expect(Set(names).count == names.count)
        for name in names + cluster.mustRefuse.map(\.name) {
            #expect(seccomp_syscall_resolve_name(name) >= 0, "\(name) is unknown on this architecture")
        }
        for rule in cluster.rules { #expect(!rule.why.isEmpty, "\(rule.name) has no reason") }
        let allowed = Set(cluster.rules.filter { $0.action.allows }.map(\.name))
        let refused = Set(cluster.mustRefuse.map(\.name))
        #expect(allowed.isDisjoint(with: refused))
        for name in ["bind", "listen", "accept", "accept4", "socketpair", "execve", "fork", "ptrace", "open", "openat"] {
            #expect(refused.contains(name), "\(name)")
        }
        #expect(cluster.rule("socket")?.action == .allowIfOneOf(argument: 0, values: [UInt64(AF_INET), UInt64(AF_INET6)]))
        #expect(cluster.rule("rt_sigaction")?.action == .allowIfOneOf(argument: 0, values: [UInt64(SIGPIPE)]))
        // Beyond the broker's allow-list, exactly these three.
        let broker = Set(SeccompPolicy.broker.rules.filter { $0.action.allows }.map(\.name))
        #expect(allowed.subtracting(broker) == ["socket", "connect", "rt_sigaction"])
        #expect(SeccompPolicy.named("cluster")?.role == "cluster")
    }
}
