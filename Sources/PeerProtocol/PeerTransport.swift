/// What the engine needs from the I/O layer: deliver a frame, close a connection, ping an idle
/// one, and hear about peers coming and going. The broker implements it over NIO channels; the
/// protocol tests implement it with arrays.
public protocol PeerTransport: AnyObject {
    /// Queues one text frame for `connection` (the bytes are copied before it returns). Returns
    /// false when the connection can no longer take it (closed, or too far behind); the engine
    /// then treats the peer as gone.
    func send(_ frame: UnsafeRawBufferPointer, to connection: ConnectionID) -> Bool
    /// Closes `connection` after the frames already sent to it. The engine forgets the
    /// connection first, so the transport's later `connectionClosed` call for it is harmless.
    func close(_ connection: ConnectionID)
    /// Sends a WebSocket ping to a connection that has been silent for a while.
    func ping(_ connection: ConnectionID)
    /// A peer was registered or left; for logs and the auth helper's hooks.
    func peerEvent(_ event: PeerEvent)
    /// Clustered: sends a frame for `id` (of realm `key`) to the instance that holds it, on
    /// behalf of `source`. False when it cannot go (the directory is down, the link is full).
    func forward(_ frame: UnsafeRawBufferPointer, key: String, to id: String, from source: String, at instance: String) -> Bool
    /// Clustered: this instance no longer holds `id` of realm `key`; its directory row goes.
    func released(id: String, key: String)
    /// Whether frames written to `connection` still wait in the server (not yet taken by the
    /// kernel): a takeover does not evict such a holder, whose ping may not have left yet.
    func hasPendingOutput(_ connection: ConnectionID) -> Bool
}

extension PeerTransport {
    public func forward(_ frame: UnsafeRawBufferPointer, key: String, to id: String, from source: String, at instance: String) -> Bool { false }
    public func released(id: String, key: String) {}
    public func hasPendingOutput(_ connection: ConnectionID) -> Bool { false }
}

extension PeerTransport {
    /// `send` for a frame held in an array.
    public func send(_ frame: [UInt8], to connection: ConnectionID) -> Bool {
        frame.withUnsafeBytes { send($0, to: connection) }
    }
}

/// A registration or departure, with the id, the key (realm), the client's address (without
/// port, as given to ``SignalingEngine/admit(_:request:ip:)``) and why.
public enum PeerEvent: Sendable, Equatable {
    case connected(id: String, key: String, connection: ConnectionID, ip: String)
    case disconnected(id: String, key: String, connection: ConnectionID, ip: String, reason: DisconnectReason)
}

/// Why a registered peer went away.
public enum DisconnectReason: String, Sendable, Equatable {
    case closed = "socket closed"
    case leave = "sent LEAVE"
    case aliveTimeout = "alive timeout"
    case replaced = "replaced by a new socket with the same token"
    case sendFailed = "could not take a message"
    case movedElsewhere = "registered again on another instance with the same token"
    case takenOver = "taken over: another token claimed the id and a ping went unanswered"
}

/// The outcome of a registration attempt, for the broker's log and tests.
public enum RegistrationOutcome: Sendable, Equatable {
    case registered
    case replacedPrevious
    case rejected(RejectReason)
    /// Clustered: the id is being claimed in the peer directory (``RegistrationAction/claim(_:)``).
    case claiming(DirectoryClaim)
    /// Another token holds the id: its socket was pinged, and the claimant gets OPEN or `ID-TAKEN`
    /// when it answers or the takeover deadline passes (``RegistrationAction/takeover``).
    case takingOver
}

/// Why a registration was refused; the client gets the matching PeerJS frame and a close.
public enum RejectReason: Sendable, Equatable {
    case missingParameters
    case invalidKey
    case idTaken
    case concurrentLimit
    /// The id, token or key breaks the length or character rules (``RegistrationRequest/violation``).
    case malformedID, malformedToken, malformedKey
    /// Denied by policy (the auth helper), with the text sent to the client.
    case denied(String)
    /// Clustered, and the peer directory cannot be asked: no id is granted that might be a duplicate.
    case directoryUnavailable

    /// The frame the client receives before the server closes the socket.
    public var frame: [UInt8] {
        switch self {
        case .missingParameters: EnvelopeWriter.error(ProtocolText.missingParameters)
        case .invalidKey: EnvelopeWriter.error(ProtocolText.invalidKey)
        case .idTaken: EnvelopeWriter.idTaken()
        case .concurrentLimit: EnvelopeWriter.error(ProtocolText.concurrentLimit)
        case .malformedID: EnvelopeWriter.error(ProtocolText.malformedID)
        case .malformedToken: EnvelopeWriter.error(ProtocolText.malformedToken)
        case .malformedKey: EnvelopeWriter.error(ProtocolText.malformedKey)
        case .denied(let text): EnvelopeWriter.error(text)
        case .directoryUnavailable: EnvelopeWriter.error(ProtocolText.directoryUnavailable)
        }
    }
}
