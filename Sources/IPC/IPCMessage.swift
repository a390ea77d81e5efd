/// A typed frame payload, so each message has exactly one encoder and one strict decoder and the
/// two can be checked against each other, and so each travels under exactly one frame type: a
/// payload can only go out under its own type (``HandoffChannel/send(_:requestID:fd:nonBlocking:)``)
/// and is decoded only from a frame of that type (``ReceivedFrame/decode(_:)``).
public protocol IPCMessage: Equatable, Sendable {
    /// The one frame type this message travels in (its row of the ``FrameType`` table).
    static var frameType: FrameType { get }
    /// Decodes a whole payload; throws on any cap, UTF-8, bool or trailing-byte violation.
    init(decoding payload: [UInt8]) throws(IPCError)
    /// Encodes the payload. Caps are not checked here; see ``encodeChecked()``.
    func encode() -> [UInt8]
    /// The payload, after checking that the peer's decoder takes it (so a sender finds an
    /// over-long string before its peer calls it a violation). The default decodes it again and
    /// compares; a message whose caps can be checked directly (or that has none) does that
    /// instead, which keeps a hot path to one encoding.
    func encodeChecked() throws(IPCError) -> [UInt8]
}

extension IPCMessage {
    public func encodeChecked() throws(IPCError) -> [UInt8] {
        let payload = encode()
        let decoded = try Self(decoding: payload)
        guard decoded == self else {
            throw IPCError(.invalidArgument, "\(Self.self) does not survive its own encoding; this is a bug in IPC")
        }
        return payload
    }
}

/// A message encoded under its own frame type, for a sender that must hold frames back while
/// the channel is full (the broker's queue to the auth helper): the type comes from the message,
/// so a queued payload still cannot go out under another type.
/// - Parameters:
///   - type: the message's ``IPCMessage/frameType``.
///   - requestID: pairs a question with its answer; 0 means none.
///   - payload: the checked encoding.
public struct EncodedFrame: Sendable {
    public let type: FrameType
    public let requestID: UInt32
    public private(set) var payload: [UInt8]

    /// Encodes `message` (``IPCMessage/encodeChecked()``) for its own frame type.
    @inlinable
    public init<M: IPCMessage>(_ message: M, requestID: UInt32 = 0) throws(IPCError) {
        self.init(type: M.frameType, requestID: requestID, payload: try message.encodeChecked())
    }

    @usableFromInline
    init(type: FrameType, requestID: UInt32, payload: [UInt8]) {
        self.type = type
        self.requestID = requestID
        self.payload = payload
    }

    /// Zeroes the payload (explicit_bzero) when its type carries key material
    /// (``FrameType/carriesSecret``); does nothing otherwise.
    public mutating func wipeSecret() {
        if type.carriesSecret { SecretBytes.wipe(&payload) }
    }
}
