/// The payload of `drain`: the supervisor asks the broker to stop taking connections and finish
/// within a deadline, so shutdown (SIGTERM) and reload can be graceful yet bounded.
/// - Parameters:
///   - deadlineMs: how long the broker may take before it must exit.
public struct DrainRequest: IPCMessage {
    @inlinable public static var frameType: FrameType { .drain }

    public var deadlineMs: UInt32

    public init(deadlineMs: UInt32) {
        self.deadlineMs = deadlineMs
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        deadlineMs = try r.readUInt32()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeUInt32(deadlineMs)
        return w.bytes
    }

    /// Every field has a fixed size, so every value decodes back: no second decoding.
    public func encodeChecked() -> [UInt8] { encode() }
}
