/// How a child process runs, as opposed to what it serves: its log level and the sandbox it
/// enters. It travels inside each role's `hello` (never on the command line, which stays
/// `--role NAME`), so the supervisor alone parses configuration and a child's argv shows nothing
/// a deployer set.
/// - Parameters:
///   - logLevel: a swift-log level name (`trace` … `critical`).
///   - user: the user it drops to when it can (when started as root or with the capabilities).
///   - chrootDirectory: the empty directory it chroots to; empty for a role without a chroot.
///   - sandboxDebug: a forbidden system call traps and is logged instead of killing the process.
public struct ChildSettings: Equatable, Sendable {
    public static let maxLogLevelLength = 16
    public static let maxUserLength = 64
    public static let maxPathLength = 1024

    public var logLevel: String
    public var user: String
    public var chrootDirectory: String
    public var sandboxDebug: Bool

    public init(logLevel: String, user: String, chrootDirectory: String = "", sandboxDebug: Bool = false) {
        self.logLevel = logLevel
        self.user = user
        self.chrootDirectory = chrootDirectory
        self.sandboxDebug = sandboxDebug
    }

    /// Reads the fields in the order ``write(to:)`` puts them.
    public init(reading r: inout PayloadReader) throws(IPCError) {
        logLevel = try r.readString(maxLength: Self.maxLogLevelLength)
        user = try r.readString(maxLength: Self.maxUserLength)
        chrootDirectory = try r.readString(maxLength: Self.maxPathLength)
        sandboxDebug = try r.readBool()
    }

    public func write(to w: inout PayloadWriter) {
        w.writeString(logLevel)
        w.writeString(user)
        w.writeString(chrootDirectory)
        w.writeBool(sandboxDebug)
    }
}
