public import IPC

/// The helper's decision for one query, before any policy program is asked.
public enum AuthDecision: Sendable, Equatable {
    case allow
    case deny(String)
    /// The built-in checks passed; the policy program decides.
    case askProgram
}

/// The built-in policies: the users file (id, token, allowed keys). Keys as rooms are checked by
/// the broker (`--keys`), after this.
/// - Parameters:
///   - users: the users file, or nil when none is configured (every id passes).
///   - hasProgram: whether a policy program has the last word.
public struct AuthPolicy: Sendable {
    public static let invalidID = "Invalid ID"
    public static let invalidKey = "Invalid Key"

    public var users: UsersFile?
    public var hasProgram: Bool

    public init(users: UsersFile?, hasProgram: Bool) {
        self.users = users
        self.hasProgram = hasProgram
    }

    public func decide(_ query: AuthQuery) -> AuthDecision {
        if let users {
            guard let entry = users.users[query.id], UsersFile.constantTimeEqual(entry.token, Array(query.token.utf8)) else {
                return .deny(Self.invalidID)
            }
            if !entry.keys.isEmpty, !entry.keys.contains(query.key) {
                return .deny(Self.invalidKey)
            }
        }
        return hasProgram ? .askProgram : .allow
    }
}
