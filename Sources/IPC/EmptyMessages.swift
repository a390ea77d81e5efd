/// A frame whose whole meaning is its type (and, for some, the descriptor beside it): the payload
/// is empty, and anything else is refused.
public protocol EmptyIPCMessage: IPCMessage {
    init()
}

extension EmptyIPCMessage {
    public init(decoding payload: [UInt8]) throws(IPCError) {
        try PayloadReader(payload).finish()
        self.init()
    }

    public func encode() -> [UInt8] { [] }
    public func encodeChecked() -> [UInt8] { [] }
}

/// The (empty) payload of `ready`: the broker has dropped privileges and installed its sandbox,
/// so the supervisor may start handing it connections. A typed value keeps "empty" checked.
public struct BrokerReady: EmptyIPCMessage {
    @inlinable public static var frameType: FrameType { .ready }
    public init() {}
}

/// The (empty) payload of `authChannel`: the broker's end of a fresh broker↔auth-helper channel
/// travels beside it (at start and after every helper restart), so a helper restart drops no peer.
public struct AuthChannelHandoff: EmptyIPCMessage {
    @inlinable public static var frameType: FrameType { .authChannel }
    public init() {}
}

/// The (empty) payload of `authReload`: the supervisor got SIGHUP, so the auth helper re-reads
/// its policy files (it keeps the running policy when they are broken).
public struct AuthReloadRequest: EmptyIPCMessage {
    @inlinable public static var frameType: FrameType { .authReload }
    public init() {}
}
