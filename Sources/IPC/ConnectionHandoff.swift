/// The payload of a `connection` frame: what the broker needs to know about an accepted socket
/// that travels beside it as SCM_RIGHTS, so it never has to ask the kernel or the supervisor.
/// - Parameters:
///   - peer: the client's address as accept(2) reported it.
///   - listenerName: which listener accepted it (for example the systemd fd name `http`), at most
///     64 bytes.
///   - tls: whether the broker must run TLS on this connection.
public struct ConnectionHandoff: IPCMessage {
    @inlinable public static var frameType: FrameType { .connection }

    public static let maxListenerNameLength = 64

    public var peer: PeerAddress
    public var listenerName: String
    public var tls: Bool

    public init(peer: PeerAddress, listenerName: String, tls: Bool) {
        self.peer = peer
        self.listenerName = listenerName
        self.tls = tls
    }

    /// The address is fixed-size, so only the listener name's cap needs a check: no second
    /// decoding on the hand-off path.
    public func encodeChecked() throws(IPCError) -> [UInt8] {
        guard listenerName.utf8.count <= Self.maxListenerNameLength else {
            throw IPCError(.oversize, "listener name of \(listenerName.utf8.count) bytes exceeds \(Self.maxListenerNameLength)")
        }
        return encode()
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        peer = try r.readPeerAddress()
        listenerName = try r.readString(maxLength: Self.maxListenerNameLength)
        tls = try r.readBool()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writePeerAddress(peer)
        w.writeString(listenerName)
        w.writeBool(tls)
        return w.bytes
    }
}
