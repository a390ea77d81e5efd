import IPC
import NIOCore
public import PeerProtocol

/// Everything the broker's HTTP and WebSocket layer needs to know, beyond the protocol rules:
/// where it is mounted, which origins may read it, and its size and time limits.
public struct BrokerConfiguration: Sendable, Equatable {
    public var protocolSettings: ProtocolSettings
    /// The `path` option, normalised to start and end with `/` (PROTOCOL.md §2).
    public var basePath: String
    /// Origins echoed in `Access-Control-Allow-Origin`; empty means echo any origin.
    public var corsOrigins: [String]
    /// Trust `X-Forwarded-For` for the client address (behind a reverse proxy).
    public var proxied: Bool
    /// The largest WebSocket message (after reassembly) a client may send; larger ones close it.
    public var maxMessageBytes: Int
    /// How long a connection may take to send a complete HTTP request, and stay idle between them.
    public var handshakeTimeoutMs: Int64
    /// How long to wait for the auth helper's verdict; 0: no helper, everyone is allowed.
    public var authTimeoutMs: Int64
    /// Whether the auth helper is told of every registration and departure (see `BrokerSettings`).
    public var authEvents: Bool
    /// The most connections (in handshake or registered) from one client address; 0: no limit.
    public var ipLimit: Int
    /// The most unfinished handshakes from one client address; 0: no limit.
    public var ipHandshakeLimit: Int
    /// The most unfinished handshakes over all addresses; past it the oldest is closed.
    public var handshakeLimit: Int
    /// The most bytes buffered for one connection that does not read; past it, it is closed.
    public var outputLimit: Int
    /// The largest HTTP request head (request line and headers) a client may send.
    public var maxHeaderBytes: Int
    /// With `proxied`: whose `X-Forwarded-For` entries to believe; empty: the connecting peer's.
    public var trustedProxies: [String]
    /// Whether ids are shared with other instances through the cluster role (`--cluster`).
    public var clustered: Bool
    /// How often the metrics go to the supervisor (`--metrics-port`); 0: no metrics are kept.
    public var metricsIntervalMs: Int64
    /// Mounted in an app that serves the other paths (PeerJSKit): a request outside `basePath`
    /// on a connection this server holds gets `307` to itself with `Connection: close`, so the
    /// client asks again on a new connection, which the app's router sees first.
    public var mounted: Bool

    public init(
        protocolSettings: ProtocolSettings = ProtocolSettings(), path: String = "/", corsOrigins: [String] = [],
        proxied: Bool = false, maxMessageBytes: Int = 65536, handshakeTimeoutMs: Int64 = 10000,
        authTimeoutMs: Int64 = 0, authEvents: Bool = true, ipLimit: Int = 0, ipHandshakeLimit: Int = 0,
        handshakeLimit: Int = 1024, outputLimit: Int = 1 << 20, maxHeaderBytes: Int = 16 * 1024,
        trustedProxies: [String] = [], clustered: Bool = false, metricsIntervalMs: Int64 = 0,
        mounted: Bool = false
    ) {
        self.protocolSettings = protocolSettings
        self.basePath = Self.normalise(path)
        self.corsOrigins = corsOrigins
        self.proxied = proxied
        self.maxMessageBytes = maxMessageBytes
        self.handshakeTimeoutMs = handshakeTimeoutMs
        self.authTimeoutMs = authTimeoutMs
        self.authEvents = authEvents
        self.ipLimit = ipLimit
        self.ipHandshakeLimit = ipHandshakeLimit
        self.handshakeLimit = handshakeLimit
        self.outputLimit = outputLimit
        self.maxHeaderBytes = maxHeaderBytes
        self.trustedProxies = trustedProxies
        self.clustered = clustered
        self.metricsIntervalMs = metricsIntervalMs
        self.mounted = mounted
    }

    /// The first setting outside the ranges the daemon's flags accept (`peerjs --help`), as a
    /// sentence naming it; nil when every one is in range. PeerJSKit checks what an app gives it
    /// with this (the daemon's command line checks its flags before it builds a configuration).
    public var problem: String? {
        let settings = protocolSettings
        for (name, value) in [("expireTimeoutMs", settings.expireTimeoutMs), ("aliveTimeoutMs", settings.aliveTimeoutMs),
                              ("cleanupIntervalMs", settings.cleanupIntervalMs), ("handshakeTimeoutMs", handshakeTimeoutMs)]
        where !(1...86_400_000).contains(value) {
            return "\(name) must be between 1 and 86400000 ms, not \(value)"
        }
        let ranges: [(String, Int, ClosedRange<Int>)] = [
            ("takeoverTimeoutMs", Int(clamping: settings.takeoverTimeoutMs), 0...60_000),
            ("authTimeoutMs", Int(clamping: authTimeoutMs), 0...60_000),
            ("concurrentLimit", settings.concurrentLimit, 1...10_000_000),
            ("ipLimit", ipLimit, 0...10_000_000),
            ("ipHandshakeLimit", ipHandshakeLimit, 0...10_000_000),
            ("handshakeLimit", handshakeLimit, 1...1_000_000),
            ("outputLimit", outputLimit, 65536...1_073_741_824),
            ("maxHeaderBytes", maxHeaderBytes, 1024...65536),
            ("maxMessageBytes", maxMessageBytes, 256...16_777_216),
            ("maxQueuedPerDestination", settings.maxQueuedPerDestination, 1...1_000_000),
            ("maxQueuedBytes", settings.maxQueuedBytes, 1...(1 << 40)),
            ("maxQueuedBytesPerDestination", settings.maxQueuedBytesPerDestination, 1...(1 << 40)),
            ("corsOrigins.count", corsOrigins.count, 0...64),
            ("trustedProxies.count", trustedProxies.count, 0...Int(BrokerSettings.maxTrustedProxies)),
        ]
        for (name, value, range) in ranges where !range.contains(value) {
            return "\(name) must be between \(range.lowerBound) and \(range.upperBound), not \(value)"
        }
        if settings.keys.isEmpty || settings.keys.contains(where: \.isEmpty) { return "keys must be one or more non-empty keys" }
        if settings.keys.count > BrokerSettings.maxExtraKeys + 1 {
            return "keys may hold at most \(BrokerSettings.maxExtraKeys + 1) keys, not \(settings.keys.count)"
        }
        if let long = settings.keys.first(where: { $0.utf8.count > AuthQuery.maxKeyLength }) {
            return "each key is at most \(AuthQuery.maxKeyLength) bytes; \(LogText.escaped(long)) is longer"
        }
        if let proxy = trustedProxies.first(where: { (try? SocketAddress(ipAddress: $0, port: 0)) == nil }) {
            return "trustedProxies: \(LogText.escaped(proxy)) is not a numeric IPv4 or IPv6 address"
        }
        // An origin-form path: it is matched against request targets and sent back in redirects.
        let pathIsPlain = basePath.hasPrefix("/") && !basePath.hasPrefix("//")
            && !basePath.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F || "?#\\%".unicodeScalars.contains($0) }
        if !pathIsPlain { return "path must be a plain path such as /peerjs (no //, ?, #, %, backslash, space or control), not \(LogText.escaped(basePath))" }
        return nil
    }

    /// `myapp` → `/myapp/`, `/` → `/`.
    public static func normalise(_ path: String) -> String {
        var result = path.hasPrefix("/") ? path : "/" + path
        if !result.hasSuffix("/") { result += "/" }
        return result
    }

    /// Whether a request target (path and query) is this server's: the base path itself, with
    /// or without its final `/`, or anything under it. The rule that PeerJSKit's router and the
    /// mounted server's `307` share.
    public func serves(target: some StringProtocol) -> Bool {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        return path.hasPrefix(basePath) || path + "/" == basePath
    }

    /// The WebSocket endpoint: the base path followed by `peerjs`.
    var webSocketPath: String { basePath + "peerjs" }
}
