/// The payload of a `connection` frame: what the broker needs to know about an accepted socket
/// that travels beside it as SCM_RIGHTS, so it never has to ask the kernel or the supervisor.
/// - Parameters:
///   - peer: the client's address as accept(2) reported it.
///   - tls: whether the broker must run TLS on this connection.
///   - acceptedAtNs: when the supervisor accepted it (CLOCK_MONOTONIC, nanoseconds; one clock
///     for every process of the host), for the hand-off latency the metrics show.
public struct ConnectionHandoff: IPCMessage {
    @inlinable public static var frameType: FrameType { .connection }

    public var peer: PeerAddress
    public var tls: Bool
    public var acceptedAtNs: UInt64

    public init(peer: PeerAddress, tls: Bool, acceptedAtNs: UInt64 = 0) {
        self.peer = peer
        self.tls = tls
        self.acceptedAtNs = acceptedAtNs
    }

    /// Every field has a fixed size, so every value decodes back: no second decoding on the
    /// hand-off path.
    public func encodeChecked() -> [UInt8] { encode() }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        peer = try r.readPeerAddress()
        tls = try r.readBool()
        acceptedAtNs = try r.readUInt64()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writePeerAddress(peer)
        w.writeBool(tls)
        w.writeUInt64(acceptedAtNs)
        return w.bytes
    }
}
