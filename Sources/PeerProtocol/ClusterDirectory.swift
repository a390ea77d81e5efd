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

/// The registrations waiting for the directory's answer to their claim, by connection and by
/// id: a second client asking for an id whose claim is out is answered like one asking for a
/// registered id (another token: ID-TAKEN at once), and an id is released only when no
/// connection here holds or claims it any more.
struct PendingClaims {
    struct Entry {
        var request: RegistrationRequest
        var ip: String
        var id: String
        var key: String
        var token: String
    }

    struct Name: Hashable {
        var key: String
        var id: String
    }

    private var entries: [ConnectionID: Entry] = [:]
    private var byName: [Name: [ConnectionID]] = [:]

    var count: Int { entries.count }

    mutating func insert(_ connection: ConnectionID, _ entry: Entry) {
        entries[connection] = entry
        byName[Name(key: entry.key, id: entry.id), default: []].append(connection)
    }

    mutating func take(_ connection: ConnectionID) -> Entry? {
        guard let entry = entries.removeValue(forKey: connection) else { return nil }
        let name = Name(key: entry.key, id: entry.id)
        byName[name]?.removeAll { $0 == connection }
        if byName[name]?.isEmpty == true { byName[name] = nil }
        return entry
    }

    /// The token of a claim out for `id` of realm `key`, if any.
    func token(of id: String, key: String) -> String? {
        byName[Name(key: key, id: id)]?.first.flatMap { entries[$0]?.token }
    }
}
