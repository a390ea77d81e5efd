/// The payload of an `authQuery` frame (broker → auth helper): what a WebSocket client presented,
/// so the helper can decide without ever seeing the client's bytes itself. The answer is an
/// `authVerdict` with the same request id in the frame header.
/// - Parameters:
///   - id: the peer id (at most 512 bytes).
///   - token: the client's token (at most 512 bytes).
///   - key: the API key, i.e. the room (at most 256 bytes).
///   - ip: the client's address without port (at most 64 bytes).
///   - version: the client library's `version=` parameter, empty when absent (at most 64 bytes).
public struct AuthQuery: IPCMessage {
    @inlinable public static var frameType: FrameType { .authQuery }

    public static let maxIDLength = 512
    public static let maxTokenLength = 4096  // the broker's token rule: real identity-provider JWTs fit
    public static let maxKeyLength = 256
    public static let maxIPLength = 64
    public static let maxVersionLength = 64

    public var id: String
    public var token: String
    public var key: String
    public var ip: String
    public var version: String

    public init(id: String, token: String, key: String, ip: String, version: String) {
        self.id = id
        self.token = token
        self.key = key
        self.ip = ip
        self.version = version
    }

    /// Whether every field is within its cap (the broker denies a longer one without asking).
    public var fitsCaps: Bool {
        id.utf8.count <= Self.maxIDLength && token.utf8.count <= Self.maxTokenLength
            && key.utf8.count <= Self.maxKeyLength && ip.utf8.count <= Self.maxIPLength
            && version.utf8.count <= Self.maxVersionLength
    }

    /// The payload, once ``fitsCaps`` holds (every Swift string is valid UTF-8, so nothing else
    /// can fail at the helper): one encoding on the registration path, no second decoding.
    public func encodeChecked() throws(IPCError) -> [UInt8] {
        guard fitsCaps else {
            throw IPCError(.oversize, "an authQuery field exceeds its cap (id \(id.utf8.count), token \(token.utf8.count), key \(key.utf8.count) bytes); deny it without asking")
        }
        return encode()
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        id = try r.readString(maxLength: Self.maxIDLength)
        token = try r.readString(maxLength: Self.maxTokenLength)
        key = try r.readString(maxLength: Self.maxKeyLength)
        ip = try r.readString(maxLength: Self.maxIPLength)
        version = try r.readString(maxLength: Self.maxVersionLength)
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter(reservingCapacity: 32 + id.utf8.count + token.utf8.count + key.utf8.count)
        w.writeString(id)
        w.writeString(token)
        w.writeString(key)
        w.writeString(ip)
        w.writeString(version)
        return w.bytes
    }
}

/// The payload of an `authVerdict` frame (auth helper → broker): allow, or deny with the text the
/// client receives in its `ERROR` frame.
/// - Parameters:
///   - allow: whether the peer may register.
///   - reason: for a denial, the client-visible reason (at most 256 bytes); empty when allowed.
public struct AuthVerdict: IPCMessage {
    @inlinable public static var frameType: FrameType { .authVerdict }

    public static let maxReasonLength = 256

    public var allow: Bool
    public var reason: String

    public init(allow: Bool, reason: String = "") {
        self.allow = allow
        self.reason = reason
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        allow = try r.readBool()
        reason = try r.readString(maxLength: Self.maxReasonLength)
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeBool(allow)
        w.writeString(reason)
        return w.bytes
    }
}

/// The payload of a `peerEvent` frame (broker → auth helper): a peer registered or went away,
/// for the deployer's `connection` / `disconnect` hooks. No answer.
/// - Parameters:
///   - kind: connection or disconnect.
///   - id: the peer id (at most 512 bytes).
///   - key: the room (at most 256 bytes).
///   - ip: the client's address without port (at most 64 bytes).
public struct PeerEventMessage: IPCMessage {
    @inlinable public static var frameType: FrameType { .peerEvent }

    /// The wire byte of the event kind.
    public enum Kind: UInt8, Sendable {
        case connection = 1
        case disconnect = 2
    }

    public var kind: Kind
    public var id: String
    public var key: String
    public var ip: String

    public init(kind: Kind, id: String, key: String, ip: String) {
        self.kind = kind
        self.id = id
        self.key = key
        self.ip = ip
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        let raw = try r.readUInt8()
        guard let kind = Kind(rawValue: raw) else {
            throw IPCError(.malformedPayload, "peer event kind \(raw) is not 1 or 2; the peer is broken, close the channel")
        }
        self.kind = kind
        id = try r.readString(maxLength: AuthQuery.maxIDLength)
        key = try r.readString(maxLength: AuthQuery.maxKeyLength)
        ip = try r.readString(maxLength: AuthQuery.maxIPLength)
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeUInt8(kind.rawValue)
        w.writeString(id)
        w.writeString(key)
        w.writeString(ip)
        return w.bytes
    }
}
