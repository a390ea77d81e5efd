/// Names one transport connection (a WebSocket) independently of the I/O layer that owns it.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "#\(rawValue)" }
}

/// What the registry knows of one registered id.
public struct PeerEntry: Sendable, Equatable {
    public var token: String
    public var connection: ConnectionID

    public init(token: String, connection: ConnectionID) {
        self.token = token
        self.connection = connection
    }
}

/// Where destinations are looked up: the only path from an id to its connection, so that a
/// registry shared between hosts (ARCHITECTURE.md, "Growing past one machine") can replace the
/// in-memory one without touching the relay rules.
public protocol Registry {
    /// The entry for `id` in the realm of `key`, if that id is registered there.
    func entry(for id: String, key: String) -> PeerEntry?
    /// Registers or replaces `id` in the realm of `key`.
    mutating func set(_ entry: PeerEntry, for id: String, key: String)
    /// Removes `id` from the realm of `key`; returns the entry it had.
    @discardableResult
    mutating func remove(id: String, key: String) -> PeerEntry?
    /// Every id registered in the realm of `key`.
    func ids(key: String) -> [String]
    /// Registered ids over all realms.
    var count: Int { get }
    /// Registered ids in the realm of `key`.
    func count(key: String) -> Int
    /// Calls `body` with every registered id, its realm and its entry.
    func forEach(_ body: (_ id: String, _ key: String, _ entry: PeerEntry) -> Void)
}

/// The registry of one host: a dictionary of realms, each a dictionary of ids.
public struct InMemoryRegistry: Registry {
    private var realms: [String: [String: PeerEntry]] = [:]
    public private(set) var count = 0

    public init() {}

    public func entry(for id: String, key: String) -> PeerEntry? {
        realms[key]?[id]
    }

    public mutating func set(_ entry: PeerEntry, for id: String, key: String) {
        if realms[key, default: [:]].updateValue(entry, forKey: id) == nil { count += 1 }
    }

    @discardableResult
    public mutating func remove(id: String, key: String) -> PeerEntry? {
        guard let old = realms[key]?.removeValue(forKey: id) else { return nil }
        count -= 1
        if realms[key]?.isEmpty == true { realms[key] = nil }
        return old
    }

    public func ids(key: String) -> [String] {
        realms[key].map { Array($0.keys) } ?? []
    }

    public func count(key: String) -> Int { realms[key]?.count ?? 0 }

    public func forEach(_ body: (_ id: String, _ key: String, _ entry: PeerEntry) -> Void) {
        for (key, ids) in realms {
            for (id, entry) in ids { body(id, key, entry) }
        }
    }
}
