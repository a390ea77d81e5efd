public import IPC
import PeerProtocol

/// Checks a token that is a signed credential (`--auth-jwt-key`); implemented outside this
/// module (AuthJWT) so that the helper's core imports no crypto.
public protocol TokenVerifier: Sendable {
    /// nil when `token` is valid for `id` and `key`; otherwise the client-visible reason.
    func denial(token: String, id: String, key: String) -> String?
    /// Runs the check once before the seccomp filter, so that lazy initialisation is done.
    func prime()
}

extension TokenVerifier {
    public func prime() {}
}

/// The helper's decision for one query, before any policy program is asked.
public enum AuthDecision: Sendable, Equatable {
    case allow
    case deny(String)
    /// The built-in checks passed; the policy program decides.
    case askProgram
}

/// The built-in policies: the users file (id, token, allowed keys) and a JWT check. Keys as rooms are checked by
/// the broker (`--keys`), after this.
/// - Parameters:
///   - users: the users file, or nil when none is configured (every id passes).
///   - hasProgram: whether a policy program has the last word.
public struct AuthPolicy: Sendable {
    public static let invalidID = ProtocolText.invalidID
    public static let invalidKey = ProtocolText.policyInvalidKey

    public var users: UsersFile?
    public var hasProgram: Bool
    /// The JWT check, or nil.
    public var verifier: (any TokenVerifier)?

    public init(users: UsersFile?, hasProgram: Bool, verifier: (any TokenVerifier)? = nil) {
        self.users = users
        self.hasProgram = hasProgram
        self.verifier = verifier
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
        if let verifier, let reason = verifier.denial(token: query.token, id: query.id, key: query.key) {
            return .deny(reason)
        }
        return hasProgram ? .askProgram : .allow
    }
}
