/// Every string a client sees (PROTOCOL.md §10 and the HTTP bodies of §4), in one place: the
/// broker and the auth helper use these, so no byte a client reads is spelt twice.
public enum ProtocolText {
    public static let missingParameters = "No id, token, or key supplied to websocket server"
    public static let invalidKey = "Invalid key provided"
    public static let concurrentLimit = "Server has reached its concurrent user limit"
    public static let idTaken = "ID is taken"
    public static let unauthorized = "Unauthorized"
    /// This project's refusals of an id, token or key that breaks the rules of
    /// ``RegistrationRequest/violation`` (README, "Ids, tokens and keys"); ERROR + close.
    public static let malformedID = "ID is invalid: at most 256 bytes of UTF-8, no control characters"
    public static let malformedToken = "Token is invalid: at most 4096 bytes of UTF-8, no control characters"
    public static let malformedKey = "Key is invalid: at most 256 bytes of UTF-8, no control characters"
    /// PeerJS 0.x's `ip_limit` refusal (ERROR, then this server closes).
    public static func ipLimit(_ ip: String) -> String { "\(ip) has reached its concurrent user limit" }

    /// Clustered (`--cluster`), and the peer directory (PostgreSQL) cannot be reached: a new id
    /// is refused rather than risk it being registered twice.
    public static let directoryUnavailable = "The peer directory is unavailable, try again later"

    // MARK: - The auth fork's refusals (PROTOCOL.md §9)

    /// The policy refused the id or token.
    public static let invalidID = "Invalid ID"
    /// The policy refused the key (the users file lists others for this id).
    public static let policyInvalidKey = "Invalid Key"
    /// The policy did not answer within `--auth-timeout`.
    public static let authTimeout = "Auth Timeout"
    /// The policy could not be asked, or failed.
    public static let authFailed = "Error on Auth"

    // MARK: - HTTP bodies (PROTOCOL.md §4)

    /// The body of `GET {path}`.
    public static let serverInfo =
        #"{"name":"PeerJS Server","description":"A server side element to broker connections between PeerJS clients.","website":"https://peerjs.com/"}"#
    public static let notFound = "Not Found"
    public static let badRequest = "Bad Request"
    public static let payloadTooLarge = "Payload Too Large"
    public static let headerFieldsTooLarge = "Request Header Fields Too Large"
}
