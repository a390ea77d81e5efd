/// The exact strings PeerJS clients and tests expect (PROTOCOL.md §10), in one place.
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
    /// The body of `GET {path}`.
    public static let serverInfo =
        #"{"name":"PeerJS Server","description":"A server side element to broker connections between PeerJS clients.","website":"https://peerjs.com/"}"#
}
