/// The payload of `authHello`: everything the auth helper is configured with, sent by the
/// supervisor as the first frame on the helper's channel, so the helper's command line is only
/// `--role auth` and its settings are parsed once, by the supervisor. The helper still reads the
/// files named here itself (it re-reads them on `authReload`).
/// - Parameters:
///   - process: its log level and sandbox (``ChildSettings``; no chroot: it re-reads files).
///   - programUser: the user its policy program runs as when users can be changed.
///   - timeoutMs: how long a policy program may take to answer one question.
///   - usersPath, programPath, jwtKeyPath, jwtAudience, jwtIssuer: empty when not configured.
public struct AuthHelperSettings: IPCMessage {
    @inlinable public static var frameType: FrameType { .authHello }

    public static let maxPathLength = 1024
    public static let maxClaimLength = 1024

    public var process: ChildSettings
    public var programUser: String
    public var timeoutMs: UInt32
    public var usersPath: String
    public var programPath: String
    public var jwtKeyPath: String
    public var jwtAudience: String
    public var jwtIssuer: String

    public init(
        process: ChildSettings, programUser: String, timeoutMs: UInt32, usersPath: String = "",
        programPath: String = "", jwtKeyPath: String = "", jwtAudience: String = "", jwtIssuer: String = ""
    ) {
        self.process = process
        self.programUser = programUser
        self.timeoutMs = timeoutMs
        self.usersPath = usersPath
        self.programPath = programPath
        self.jwtKeyPath = jwtKeyPath
        self.jwtAudience = jwtAudience
        self.jwtIssuer = jwtIssuer
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        process = try ChildSettings(reading: &r)
        programUser = try r.readString(maxLength: ChildSettings.maxUserLength)
        timeoutMs = try r.readUInt32()
        usersPath = try r.readString(maxLength: Self.maxPathLength)
        programPath = try r.readString(maxLength: Self.maxPathLength)
        jwtKeyPath = try r.readString(maxLength: Self.maxPathLength)
        jwtAudience = try r.readString(maxLength: Self.maxClaimLength)
        jwtIssuer = try r.readString(maxLength: Self.maxClaimLength)
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        process.write(to: &w)
        w.writeString(programUser)
        w.writeUInt32(timeoutMs)
        for text in [usersPath, programPath, jwtKeyPath, jwtAudience, jwtIssuer] { w.writeString(text) }
        return w.bytes
    }
}
