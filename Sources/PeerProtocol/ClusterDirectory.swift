/// A registration the engine cannot grant alone because ids are shared with other instances
/// (`--cluster`): the owner of the engine asks the peer directory to claim the id and passes the
/// answer to ``SignalingEngine/claimed(_:for:)``.
public struct DirectoryClaim: Sendable, Equatable {
    public var connection: ConnectionID
    public var id: String
    public var key: String
    public var token: String

    public init(connection: ConnectionID, id: String, key: String, token: String) {
        self.connection = connection
        self.id = id
        self.key = key
        self.token = token
    }
}

/// The peer directory's answer to a ``DirectoryClaim``.
public enum ClaimAnswer: Sendable, Equatable {
    /// The id is this instance's now (new, expired elsewhere, or moved here with the same token).
    case granted
    /// Another live registration holds the id with another token: `ID-TAKEN`.
    case taken
    /// The cluster holds `concurrent_limit` ids already.
    case limit
    /// The directory cannot be asked (the database is unreachable): ERROR, nothing registered.
    case unavailable
}

/// The ids registered on other instances, as the directory announced them: where a message for
/// an id that is not local goes, and what `/{key}/peers` lists beside the local ids.
struct RemotePeers {
    private var realms: [String: [String: String]] = [:]
    private(set) var count = 0

    func instance(of id: String, key: String) -> String? { realms[key]?[id] }

    mutating func set(_ id: String, key: String, instance: String) {
        if realms[key, default: [:]].updateValue(instance, forKey: id) == nil { count += 1 }
    }

    /// Forgets `id` if `instance` (nil: any) holds it.
    mutating func remove(_ id: String, key: String, instance: String?) {
        guard let holder = realms[key]?[id], instance == nil || holder == instance else { return }
        realms[key]?[id] = nil
        count -= 1
        if realms[key]?.isEmpty == true { realms[key] = nil }
    }

    mutating func removeAll(held instance: String) {
        for (key, ids) in realms {
            let kept = ids.filter { $0.value != instance }
            count -= ids.count - kept.count
            realms[key] = kept.isEmpty ? nil : kept
        }
    }

    mutating func removeAll() {
        realms = [:]
        count = 0
    }

    func ids(key: String) -> [String] { realms[key].map { Array($0.keys) } ?? [] }
}
