/// The payload of `stats`: counters the broker reports so the supervisor can show status (sd_notify
/// STATUS=) and logs without reaching into the sandbox.
/// - Parameters:
///   - registeredPeers: peers currently registered, over all keys.
///   - openConnections: client connections currently open.
///   - queuedMessages: messages waiting for a peer that has not connected yet.
public struct BrokerStats: IPCMessage {
    @inlinable public static var frameType: FrameType { .stats }

    public var registeredPeers: UInt32
    public var openConnections: UInt32
    public var queuedMessages: UInt32

    public init(registeredPeers: UInt32, openConnections: UInt32, queuedMessages: UInt32) {
        self.registeredPeers = registeredPeers
        self.openConnections = openConnections
        self.queuedMessages = queuedMessages
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        registeredPeers = try r.readUInt32()
        openConnections = try r.readUInt32()
        queuedMessages = try r.readUInt32()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeUInt32(registeredPeers)
        w.writeUInt32(openConnections)
        w.writeUInt32(queuedMessages)
        return w.bytes
    }
}
