/// Everything the broker needs from the configuration, sent by the supervisor in `hello` (and
/// again in `reload`) because the sandboxed broker cannot read files itself.
/// - Parameters:
///   - key: the PeerJS API key (at most 256 bytes).
///   - path: the mount path, for example `/` or `/myapp` (at most 1024 bytes).
///   - expireTimeoutMs: how long a queued message for an absent peer is kept.
///   - aliveTimeoutMs: how long a silent client is kept before it is dropped.
///   - cleanupIntervalMs: how often expired messages and dead clients are swept.
///   - concurrentLimit: the most peers per key.
///   - allowDiscovery: whether `GET /peers` lists peer ids.
///   - proxied: whether a reverse proxy sits in front (trust `X-Forwarded-For`).
///   - corsOrigins: allowed CORS origins (at most 64, each at most 1024 bytes); empty = echo any.
///   - maxMessageBytes: the largest WebSocket message accepted from a client.
///   - handshakeTimeoutMs: how long a connection may take to finish its HTTP/WebSocket handshake.
///   - threads: the number of event-loop threads to start.
///   - extraKeys: further API keys (rooms) served besides `key`, each its own realm (`--keys`; at
///     most 16, each at most 64 bytes, so `hello` stays within its cap).
///   - authTimeoutMs: how long the broker waits for the auth helper's verdict; 0 means there is
///     no auth helper and every registration is allowed (the default, as plain peerjs-server).
public struct BrokerSettings: IPCMessage {
    public static let maxKeyLength = 256
    public static let maxPathLength = 1024
    public static let maxCorsOrigins = 64
    public static let maxCorsOriginLength = 1024

    public var key: String
    public var path: String
    public var expireTimeoutMs: UInt32
    public var aliveTimeoutMs: UInt32
    public var cleanupIntervalMs: UInt32
    public var concurrentLimit: UInt32
    public var allowDiscovery: Bool
    public var proxied: Bool
    public var corsOrigins: [String]
    public var maxMessageBytes: UInt32
    public var handshakeTimeoutMs: UInt32
    public var threads: UInt32
    public var extraKeys: [String]
    public var authTimeoutMs: UInt32
    /// Whether the auth helper wants connection and disconnect events: only a policy program
    /// or a helper logging at info or below uses them, so otherwise the broker sends none.
    public var authEvents: Bool
    public static let maxExtraKeys = 16
    public static let maxExtraKeyLength = 64

    public init(
        key: String, path: String, expireTimeoutMs: UInt32, aliveTimeoutMs: UInt32,
        cleanupIntervalMs: UInt32, concurrentLimit: UInt32, allowDiscovery: Bool, proxied: Bool,
        corsOrigins: [String], maxMessageBytes: UInt32, handshakeTimeoutMs: UInt32, threads: UInt32,
        extraKeys: [String] = [], authTimeoutMs: UInt32 = 0, authEvents: Bool = true
    ) {
        self.key = key
        self.path = path
        self.expireTimeoutMs = expireTimeoutMs
        self.aliveTimeoutMs = aliveTimeoutMs
        self.cleanupIntervalMs = cleanupIntervalMs
        self.concurrentLimit = concurrentLimit
        self.allowDiscovery = allowDiscovery
        self.proxied = proxied
        self.corsOrigins = corsOrigins
        self.maxMessageBytes = maxMessageBytes
        self.handshakeTimeoutMs = handshakeTimeoutMs
        self.threads = threads
        self.extraKeys = extraKeys
        self.authTimeoutMs = authTimeoutMs
        self.authEvents = authEvents
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        key = try r.readString(maxLength: Self.maxKeyLength)
        path = try r.readString(maxLength: Self.maxPathLength)
        expireTimeoutMs = try r.readUInt32()
        aliveTimeoutMs = try r.readUInt32()
        cleanupIntervalMs = try r.readUInt32()
        concurrentLimit = try r.readUInt32()
        allowDiscovery = try r.readBool()
        proxied = try r.readBool()
        corsOrigins = try r.readStringList(maxCount: Self.maxCorsOrigins, maxLength: Self.maxCorsOriginLength)
        maxMessageBytes = try r.readUInt32()
        handshakeTimeoutMs = try r.readUInt32()
        threads = try r.readUInt32()
        extraKeys = try r.readStringList(maxCount: Self.maxExtraKeys, maxLength: Self.maxExtraKeyLength)
        authTimeoutMs = try r.readUInt32()
        authEvents = try r.readBool()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter(reservingCapacity: 64 + key.utf8.count + path.utf8.count)
        w.writeString(key)
        w.writeString(path)
        w.writeUInt32(expireTimeoutMs)
        w.writeUInt32(aliveTimeoutMs)
        w.writeUInt32(cleanupIntervalMs)
        w.writeUInt32(concurrentLimit)
        w.writeBool(allowDiscovery)
        w.writeBool(proxied)
        w.writeStringList(corsOrigins)
        w.writeUInt32(maxMessageBytes)
        w.writeUInt32(handshakeTimeoutMs)
        w.writeUInt32(threads)
        w.writeStringList(extraKeys)
        w.writeUInt32(authTimeoutMs)
        w.writeBool(authEvents)
        return w.bytes
    }
}
