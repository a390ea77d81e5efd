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
///   - extraKeys: further API keys (rooms) served besides `key`, each its own realm (`--keys`; at
///     most 16, each at most 64 bytes, so `hello` stays within its cap).
///   - authTimeoutMs: how long the broker waits for the auth helper's verdict; 0 means there is
///     no auth helper and every registration is allowed (the default, as plain peerjs-server).
///   - ipLimit: the most connections (in handshake or registered) from one client address; 0: no limit.
///   - ipHandshakeLimit: the most connections from one address that have not finished their
///     handshake; 0: no limit.
///   - handshakeLimit: the most connections in handshake at once, over all addresses; past it the
///     oldest is closed. Part of the descriptor budget.
///   - outputLimit: the most bytes the broker buffers for one connection that is not reading;
///     past it the connection is closed.
///   - maxHeaderBytes: the largest HTTP request head (request line and headers).
///   - trustedProxies: with `proxied`, the addresses of the proxies whose `X-Forwarded-For`
///     entries are believed (numeric, checked with inet_pton); empty trusts the connecting peer.
///   - takeoverTimeoutMs: how long the socket holding an id has to answer a ping when another
///     token asks for the id (`--takeover-timeout`); 0: ID-TAKEN at once.
///   - metricsIntervalMs: how often the broker sends its metrics (`metrics` frames); 0: never
///     (no `--metrics-port`), and it keeps no metrics at all.
public struct BrokerSettings: IPCMessage {
    @inlinable public static var frameType: FrameType { .hello }

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
    public var extraKeys: [String]
    public var authTimeoutMs: UInt32
    /// Whether the auth helper wants connection and disconnect events: only a policy program
    /// or a helper logging at info or below uses them, so otherwise the broker sends none.
    public var authEvents: Bool
    public static let maxExtraKeys = 16
    public static let maxExtraKeyLength = 64
    public var ipLimit: UInt32
    public var ipHandshakeLimit: UInt32
    public var handshakeLimit: UInt32
    public var outputLimit: UInt32
    public var maxHeaderBytes: UInt32
    public var trustedProxies: [String]
    /// How the broker process runs (log level, user, chroot); read at start only — a `reload`
    /// carries the running values, see `Supervisor.reloadConfiguration`.
    public var process: ChildSettings
    /// Whether ids are shared with other instances (`--cluster`): a new id is claimed in the
    /// peer directory first, and refused while it cannot be. Read at start only, like `process`.
    public var clustered: Bool
    public var takeoverTimeoutMs: UInt32
    public var metricsIntervalMs: UInt32
    public static let maxTrustedProxies = 64
    public static let maxTrustedProxyLength = 64

    /// Descriptors the broker keeps for itself beyond its connection budget: epoll, eventfd,
    /// timerfd, the supervisor and auth channels, stdio, and room for hand-offs in flight.
    public static let descriptorReserve: UInt64 = 64

    /// The broker's wanted RLIMIT_NOFILE: a descriptor for every peer `concurrentLimit` allows,
    /// for every connection `handshakeLimit` allows in its handshake, and the reserve.
    public var wantedOpenFiles: UInt64 {
        UInt64(concurrentLimit) + UInt64(handshakeLimit) + Self.descriptorReserve
    }

    /// Defaults of the limits that peerjs-server does not have (README, "Limits").
    public static let defaultIPLimit: UInt32 = 1000
    public static let defaultIPHandshakeLimit: UInt32 = 128
    public static let defaultHandshakeLimit: UInt32 = 1024
    public static let defaultOutputLimit: UInt32 = 1 << 20
    public static let defaultMaxHeaderBytes: UInt32 = 16 * 1024
    public static let defaultTakeoverTimeoutMs: UInt32 = 2000

    public init(
        key: String, path: String, expireTimeoutMs: UInt32, aliveTimeoutMs: UInt32,
        cleanupIntervalMs: UInt32, concurrentLimit: UInt32, allowDiscovery: Bool, proxied: Bool,
        corsOrigins: [String], maxMessageBytes: UInt32, handshakeTimeoutMs: UInt32,
        extraKeys: [String] = [], authTimeoutMs: UInt32 = 0, authEvents: Bool = true,
        ipLimit: UInt32 = BrokerSettings.defaultIPLimit, ipHandshakeLimit: UInt32 = BrokerSettings.defaultIPHandshakeLimit,
        handshakeLimit: UInt32 = BrokerSettings.defaultHandshakeLimit, outputLimit: UInt32 = BrokerSettings.defaultOutputLimit,
        maxHeaderBytes: UInt32 = BrokerSettings.defaultMaxHeaderBytes, trustedProxies: [String] = [],
        process: ChildSettings = ChildSettings(logLevel: "info", user: ""), clustered: Bool = false,
        takeoverTimeoutMs: UInt32 = BrokerSettings.defaultTakeoverTimeoutMs, metricsIntervalMs: UInt32 = 0
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
        self.extraKeys = extraKeys
        self.authTimeoutMs = authTimeoutMs
        self.authEvents = authEvents
        self.ipLimit = ipLimit
        self.ipHandshakeLimit = ipHandshakeLimit
        self.handshakeLimit = handshakeLimit
        self.outputLimit = outputLimit
        self.maxHeaderBytes = maxHeaderBytes
        self.trustedProxies = trustedProxies
        self.process = process
        self.clustered = clustered
        self.takeoverTimeoutMs = takeoverTimeoutMs
        self.metricsIntervalMs = metricsIntervalMs
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
        extraKeys = try r.readStringList(maxCount: Self.maxExtraKeys, maxLength: Self.maxExtraKeyLength)
        authTimeoutMs = try r.readUInt32()
        authEvents = try r.readBool()
        ipLimit = try r.readUInt32()
        ipHandshakeLimit = try r.readUInt32()
        handshakeLimit = try r.readUInt32()
        outputLimit = try r.readUInt32()
        maxHeaderBytes = try r.readUInt32()
        trustedProxies = try r.readStringList(maxCount: Self.maxTrustedProxies, maxLength: Self.maxTrustedProxyLength)
        process = try ChildSettings(reading: &r)
        clustered = try r.readBool()
        takeoverTimeoutMs = try r.readUInt32()
        metricsIntervalMs = try r.readUInt32()
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
        w.writeStringList(extraKeys)
        w.writeUInt32(authTimeoutMs)
        w.writeBool(authEvents)
        w.writeUInt32(ipLimit)
        w.writeUInt32(ipHandshakeLimit)
        w.writeUInt32(handshakeLimit)
        w.writeUInt32(outputLimit)
        w.writeUInt32(maxHeaderBytes)
        w.writeStringList(trustedProxies)
        process.write(to: &w)
        w.writeBool(clustered)
        w.writeUInt32(takeoverTimeoutMs)
        w.writeUInt32(metricsIntervalMs)
        return w.bytes
    }
}
