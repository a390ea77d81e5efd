/// The exact strings PeerJS clients and tests expect (PROTOCOL.md §10), in one place.
public enum ProtocolText {
    public static let missingParameters = "No id, token, or key supplied to websocket server"
    public static let invalidKey = "Invalid key provided"
    public static let concurrentLimit = "Server has reached its concurrent user limit"
    public static let idTaken = "ID is taken"
    public static let unauthorized = "Unauthorized"
    /// The body of `GET {path}`.
    public static let serverInfo =
        #"{"name":"PeerJS Server","description":"A server side element to broker connections between PeerJS clients.","website":"https://peerjs.com/"}"#
}
