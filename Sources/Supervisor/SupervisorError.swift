import Glibc

/// Why the supervisor could not start or keep serving, with what to do about it.
public struct SupervisorError: Error, CustomStringConvertible, Equatable {
    /// Opaque category; compare errors by it.
    public struct Code: Hashable, Sendable {
        let name: String
        public static let bind = Code(name: "bind")
        public static let resolve = Code(name: "resolve")
        public static let spawn = Code(name: "spawn")
        public static let signals = Code(name: "signals")
        public static let crashLoop = Code(name: "crashLoop")
        public static let activation = Code(name: "activation")
        public static let configuration = Code(name: "configuration")
        /// The TLS key, certificate or passphrase file cannot be read or used.
        public static let tls = Code(name: "tls")
        /// The broker's sandbox cannot be set up (missing user, chroot directory).
        public static let sandbox = Code(name: "sandbox")
    }

    public let code: Code
    public let description: String

    init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }

    static func errnoText(_ value: Int32 = errno) -> String {
        String(cString: strerror(value))
    }
}
