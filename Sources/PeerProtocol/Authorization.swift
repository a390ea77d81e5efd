/// What the engine asks of the deployer's policy (the auth helper) before it registers a client:
/// the parameters the client presented and where it connects from. The engine hands it out in
/// ``RegistrationAction/authorize(_:)`` and takes the answer back in
/// ``SignalingEngine/verdict(_:for:)``; who carries it there and back is not its concern.
public struct AuthorizationQuery: Sendable, Equatable {
    public var connection: ConnectionID
    public var id: String
    public var token: String
    public var key: String
    /// The client's address, without port.
    public var ip: String
    /// The client library's `version=` parameter; empty when absent.
    public var version: String

    public init(connection: ConnectionID, id: String, token: String, key: String, ip: String, version: String) {
        self.connection = connection
        self.id = id
        self.token = token
        self.key = key
        self.ip = ip
        self.version = version
    }
}

/// The policy's answer to an ``AuthorizationQuery``, or why there is none. Only `.allow`
/// registers; every other answer is a refusal with its own client-visible text (PROTOCOL.md §10).
public enum AuthorizationAnswer: Sendable, Equatable {
    case allow
    /// Denied, with the text the client gets (`Error on Auth` when empty).
    case deny(String)
    /// No answer within the deadline: `Auth Timeout`.
    case timedOut
    /// The policy could not be asked or failed (no helper, a lost or full channel): `Error on Auth`.
    case failed
    /// The query cannot be put to the policy (a field over the channel's caps): `Invalid ID`.
    case unaskable

    /// The refusal this answer means, or nil for `.allow`.
    var refusal: RejectReason? {
        switch self {
        case .allow: nil
        case .deny(let text): .denied(text.isEmpty ? ProtocolText.authFailed : text)
        case .timedOut: .denied(ProtocolText.authTimeout)
        case .failed: .denied(ProtocolText.authFailed)
        case .unaskable: .denied(ProtocolText.invalidID)
        }
    }
}

/// What the owner of the engine must do next about a registration. The engine has already sent
/// what the client gets (OPEN, or ERROR and a close); only `.authorize` asks for more work.
public enum RegistrationAction: Sendable, Equatable {
    /// Put the query to the policy and pass its answer to ``SignalingEngine/verdict(_:for:)``.
    case authorize(AuthorizationQuery)
    /// Clustered: claim the id in the peer directory and pass the answer to
    /// ``SignalingEngine/claimed(_:for:)``.
    case claim(DirectoryClaim)
    /// Waiting for a takeover (`--takeover-timeout`): the engine sends OPEN or `ID-TAKEN` itself,
    /// from ``SignalingEngine/tick()`` or when the id's holder answers its ping.
    case takeover
    /// Registered: the client got OPEN.
    case open
    /// Refused: the client got the reason's frame and its connection is closed.
    case refuse(RejectReason)
    /// Nothing: the answer is for a registration that no longer waits (the client left, or it
    /// was answered already).
    case none
}

/// The registrations waiting for the policy's answer, by connection: one entry per question out,
/// dropped when the answer comes or the client leaves, so a late answer finds nothing to act on.
struct PendingAuthorizations {
    struct Entry {
        var request: RegistrationRequest
        var ip: String
    }

    private var entries: [ConnectionID: Entry] = [:]

    var count: Int { entries.count }

    mutating func insert(_ connection: ConnectionID, request: RegistrationRequest, ip: String) {
        entries[connection] = Entry(request: request, ip: ip)
    }

    mutating func take(_ connection: ConnectionID) -> Entry? {
        entries.removeValue(forKey: connection)
    }
}
