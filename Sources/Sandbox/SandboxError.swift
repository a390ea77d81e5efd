import Glibc

/// Why the sandbox could not be entered. The broker must not serve without it, so every error
/// is fatal for the process; the message says what to do about it.
/// - Parameters:
///   - code: the category; errors compare equal by code.
///   - message: what failed and what to do.
public struct SandboxError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Opaque category; compare errors by it.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// setrlimit failed.
        public static let limits = Code(name: "limits")
        /// The broker's user does not exist.
        public static let unknownUser = Code(name: "unknownUser")
        /// chroot or chdir failed, or the directory is not an empty root-owned directory.
        public static let chroot = Code(name: "chroot")
        /// setgroups/setresgid/setresuid failed, or root could be regained afterwards.
        public static let identity = Code(name: "identity")
        /// Capabilities could not be read or cleared, a thread still holds one, or the process
        /// is root without the capabilities to leave uid 0.
        public static let capabilities = Code(name: "capabilities")
        /// PR_SET_NO_NEW_PRIVS failed.
        public static let noNewPrivileges = Code(name: "noNewPrivileges")
        /// The seccomp filter could not be built or loaded.
        public static let seccomp = Code(name: "seccomp")
        /// The role's own step before the filter failed (the auth helper's policy program).
        public static let roleSetup = Code(name: "roleSetup")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }

    static func errnoText(_ value: Int32 = errno) -> String {
        String(cString: strerror(value))
    }
}
