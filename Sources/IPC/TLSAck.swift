/// The payload of `tlsAck`: the broker's answer to one whole generation of ``TLSChunk`` frames,
/// so the supervisor knows which certificate is really in force. Without it the supervisor
/// logged a reload as done when it had only *sent* the material; a broker that could not build
/// a context from it kept the old certificate while the supervisor believed the new one served
/// (issue 16 item 7). Sent at start (before `ready`) and after every reload.
/// - Parameters:
///   - generation: the generation answered (``TLSChunk/generation``).
///   - accepted: true when new handshakes use this material from now on; false when the broker
///     refused it and keeps what it had.
///   - reason: why it was refused (empty when accepted), at most ``maxReasonLength`` bytes.
public struct TLSAck: IPCMessage {
    @inlinable public static var frameType: FrameType { .tlsAck }

    public static let maxReasonLength = 512

    public var generation: UInt32
    public var accepted: Bool
    public var reason: String

    public init(generation: UInt32, accepted: Bool, reason: String = "") {
        self.generation = generation
        self.accepted = accepted
        self.reason = reason
    }

    /// A refusal whose reason is cut (on a character boundary) to fit the cap.
    public static func refused(generation: UInt32, reason: String) -> TLSAck {
        var text = Substring(reason)
        while text.utf8.count > maxReasonLength { text = text.dropLast() }
        return TLSAck(generation: generation, accepted: false, reason: String(text))
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        generation = try r.readUInt32()
        accepted = try r.readBool()
        reason = try r.readString(maxLength: Self.maxReasonLength)
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter(reservingCapacity: 9 + reason.utf8.count)
        w.writeUInt32(generation)
        w.writeBool(accepted)
        w.writeString(reason)
        return w.bytes
    }
}
