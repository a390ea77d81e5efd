/// The protocol options of peerjs-server (`key`, `expire_timeout`, `alive_timeout`,
/// `concurrent_limit`, `allow_discovery`, `cleanup_out_msgs`), in one value the engine is built from.
public struct ProtocolSettings: Sendable, Equatable {
    /// The API keys served; each key is its own realm (one key in plain peerjs-server).
    public var keys: Set<String>
    /// How long messages for an offline id wait before the senders get `EXPIRE`.
    public var expireTimeoutMs: Int64
    /// How long a peer may stay silent (no frame, no pong) before it is dropped.
    public var aliveTimeoutMs: Int64
    /// The most ids registered at once, over all realms.
    public var concurrentLimit: Int
    /// Whether `GET /{key}/peers` lists the realm's ids.
    public var allowDiscovery: Bool
    /// How often offline queues are swept for expiry (`cleanup_out_msgs`).
    public var cleanupIntervalMs: Int64
    /// The most messages kept for one offline id; past it the sender gets `EXPIRE` at once.
    public var maxQueuedPerDestination: Int
    /// The most bytes kept in all offline queues together; past it senders get `EXPIRE` at once.
    public var maxQueuedBytes: Int
    /// The most bytes kept for one offline id: at most half the output limit, so that the flush
    /// on its registration always fits and nobody can keep an id from registering by queueing.
    public var maxQueuedBytesPerDestination: Int
    /// Whether a policy (the auth helper) must allow each registration
    /// (``SignalingEngine/admit(_:request:ip:)`` then returns `.authorize`).
    public var authorizes: Bool
    /// Whether ids are shared with other instances through the peer directory (`--cluster`):
    /// a new id is then claimed there (``RegistrationAction/claim(_:)``) before it registers.
    public var clustered: Bool
    /// How long the socket holding an id may take to answer a ping when another token asks for
    /// that id (`--takeover-timeout`); silent, it is closed and the id changes hands. 0: off
    /// (the other token gets `ID-TAKEN` at once, as in peerjs-server).
    public var takeoverTimeoutMs: Int64

    public init(
        keys: Set<String> = ["peerjs"],
        expireTimeoutMs: Int64 = 5000,
        aliveTimeoutMs: Int64 = 60000,
        concurrentLimit: Int = 5000,
        allowDiscovery: Bool = false,
        cleanupIntervalMs: Int64 = 1000,
        maxQueuedPerDestination: Int = 256,
        maxQueuedBytes: Int = 64 << 20,
        maxQueuedBytesPerDestination: Int = 512 << 10,
        authorizes: Bool = false,
        clustered: Bool = false,
        takeoverTimeoutMs: Int64 = 2000
    ) {
        self.keys = keys
        self.expireTimeoutMs = expireTimeoutMs
        self.aliveTimeoutMs = aliveTimeoutMs
        self.concurrentLimit = concurrentLimit
        self.allowDiscovery = allowDiscovery
        self.cleanupIntervalMs = cleanupIntervalMs
        self.maxQueuedPerDestination = maxQueuedPerDestination
        self.maxQueuedBytes = maxQueuedBytes
        self.maxQueuedBytesPerDestination = maxQueuedBytesPerDestination
        self.authorizes = authorizes
        self.clustered = clustered
        self.takeoverTimeoutMs = takeoverTimeoutMs
    }
}
