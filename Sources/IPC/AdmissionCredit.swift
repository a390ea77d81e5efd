/// The payload of `credit`: the broker grants the supervisor room for `count` more connections.
/// It exists so the broker never receives more descriptors than its RLIMIT_NOFILE holds (a
/// hand-off into a full descriptor table loses the descriptor, `MSG_CTRUNC`): the supervisor
/// hands over only connections it holds credit for and sheds the rest (accept, close).
/// - Parameters:
///   - count: connections the supervisor may hand over beyond those already granted.
public struct AdmissionCredit: IPCMessage {
    @inlinable public static var frameType: FrameType { .credit }

    public var count: UInt32

    public init(count: UInt32) {
        self.count = count
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        count = try r.readUInt32()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeUInt32(count)
        return w.bytes
    }

    /// Every field has a fixed size, so every value decodes back: no second decoding.
    public func encodeChecked() -> [UInt8] { encode() }
}
