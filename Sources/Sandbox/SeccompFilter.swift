import CSeccomp
import CShim
import Glibc

/// Builds a ``SeccompPolicy`` into a libseccomp filter and loads it into every thread.
public enum SeccompFilter {
    // The action constants: SCMP_ACT_ERRNO(x) is a function-like macro and does not import.
    static let actionAllow: UInt32 = 0x7fff_0000  // SCMP_ACT_ALLOW
    static let actionKillProcess: UInt32 = 0x8000_0000  // SCMP_ACT_KILL_PROCESS
    static let actionTrap: UInt32 = 0x0003_0000  // SCMP_ACT_TRAP
    static func actionErrno(_ value: Int32) -> UInt32 { 0x0005_0000 | (UInt32(value) & 0xffff) }

    /// The syscall number of `name` on this architecture, or nil (`__NR_SCMP_ERROR`).
    public static func number(of name: String) -> Int32? {
        let value = seccomp_syscall_resolve_name(name)
        return value < 0 ? nil : value
    }

    /// Loads `policy` with thread sync (threads already running get it too). Unlisted calls kill
    /// the process; with `debug`, they trap into a SIGSYS handler that names the call on stderr
    /// first. Everything here happens before the load; nothing afterwards needs a new call.
    public static func load(_ policy: SeccompPolicy, debug: Bool) throws(SandboxError) {
        if debug { try installReporter() }
        guard let context = seccomp_init(debug ? actionTrap : actionKillProcess) else {
            throw SandboxError(.seccomp, "seccomp_init failed; is the kernel built with CONFIG_SECCOMP_FILTER?")
        }
        defer { seccomp_release(context) }
        var rc = seccomp_attr_set(context, SCMP_FLTATR_CTL_TSYNC, 1)
        guard rc == 0 else {
            throw SandboxError(.seccomp, "seccomp thread sync is unavailable (\(SandboxError.errnoText(-rc))); a kernel ≥ 3.17 is needed")
        }
        // A call through another ABI (i386 `int 0x80`, x32 numbers) kills the whole process, as an
        // unlisted call does (libseccomp's default would kill only the calling thread), also in
        // debug mode (the SIGSYS reporter would name it from the wrong table).
        rc = seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, actionKillProcess)
        guard rc == 0 else {
            throw SandboxError(.seccomp, "cannot set the filter's bad-architecture action: \(SandboxError.errnoText(-rc)); libseccomp ≥ 2.4 is needed")
        }
        for rule in policy.rules {
            guard let number = number(of: rule.name) else {
                throw SandboxError(.seccomp, "the \(policy.role) policy names \(rule.name), unknown on this architecture; fix Sources/Sandbox/SeccompPolicy.swift")
            }
            switch rule.action {
            case .allow:
                rc = seccomp_rule_add_array(context, actionAllow, number, 0, nil)
            case .errno(let value):
                rc = seccomp_rule_add_array(context, actionErrno(value), number, 0, nil)
            case .allowIfMasked(let argument, let mask, let value):
                var comparison = scmp_arg_cmp(arg: argument, op: SCMP_CMP_MASKED_EQ, datum_a: mask, datum_b: value)
                rc = seccomp_rule_add_array(context, actionAllow, number, 1, &comparison)
            case .allowIfOneOf(let argument, let values):
                for value in values {
                    var comparison = scmp_arg_cmp(arg: argument, op: SCMP_CMP_EQ, datum_a: value, datum_b: 0)
                    rc = seccomp_rule_add_array(context, actionAllow, number, 1, &comparison)
                    if rc != 0 { break }
                }
            case .allowIfAll(let alternatives):
                for alternative in alternatives {
                    var comparisons = alternative.map { scmp_arg_cmp(arg: $0.index, op: SCMP_CMP_EQ, datum_a: $0.value, datum_b: 0) }
                    rc = seccomp_rule_add_array(context, actionAllow, number, UInt32(comparisons.count), &comparisons)
                    if rc != 0 { break }
                }
            }
            guard rc == 0 else {
                throw SandboxError(.seccomp, "cannot add the rule for \(rule.name): \(SandboxError.errnoText(-rc))")
            }
        }
        rc = seccomp_load(context)
        guard rc == 0 else {
            throw SandboxError(.seccomp, "seccomp_load failed: \(SandboxError.errnoText(-rc)); a thread may already run under another filter")
        }
    }

    /// The SIGSYS handler of debug mode, with a table of call names resolved now (the handler
    /// may only write(2)).
    static func installReporter() throws(SandboxError) {
        let count = 512
        let table = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: count)  // kept for ever
        for number in 0..<count {
            table[number] = seccomp_syscall_resolve_num_arch(UInt32(SCMP_ARCH_NATIVE), Int32(number)).map { UnsafePointer($0) }
        }
        guard cshim_install_sigsys_reporter(table, Int32(count)) == 0 else {
            throw SandboxError(.seccomp, "cannot install the SIGSYS handler: \(SandboxError.errnoText())")
        }
    }
}
