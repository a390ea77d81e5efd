/// A typed frame payload, so each message has exactly one encoder and one strict decoder and the
/// two can be checked against each other.
public protocol IPCMessage: Equatable, Sendable {
    /// Decodes a whole payload; throws on any cap, UTF-8, bool or trailing-byte violation.
    init(decoding payload: [UInt8]) throws(IPCError)
    /// Encodes the payload. Caps are not checked here; see ``encodeChecked()``.
    func encode() -> [UInt8]
}

extension IPCMessage {
    /// The payload, after checking that it decodes back to this value (so a sender finds an
    /// over-long string before its peer calls it a violation).
    public func encodeChecked() throws(IPCError) -> [UInt8] {
        let payload = encode()
        let decoded = try Self(decoding: payload)
        guard decoded == self else {
            throw IPCError(.invalidArgument, "\(Self.self) does not survive its own encoding; this is a bug in IPC")
        }
        return payload
    }
}
