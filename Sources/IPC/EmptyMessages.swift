/// The (empty) payload of `ready`: the broker has dropped privileges and installed its sandbox,
/// so the supervisor may start handing it connections. A typed value keeps "empty" checked.
public struct BrokerReady: IPCMessage {
    @inlinable public static var frameType: FrameType { .ready }

    public init() {}

    public init(decoding payload: [UInt8]) throws(IPCError) {
        try PayloadReader(payload).finish()
    }

    public func encode() -> [UInt8] { [] }
    public func encodeChecked() -> [UInt8] { [] }
}

/// The (empty) payload of `authChannel`: the broker's end of a fresh broker↔auth-helper channel
/// travels beside it (at start and after every helper restart), so a helper restart drops no peer.
public struct AuthChannelHandoff: IPCMessage {
    @inlinable public static var frameType: FrameType { .authChannel }

    public init() {}

    public init(decoding payload: [UInt8]) throws(IPCError) {
        try PayloadReader(payload).finish()
    }

    public func encode() -> [UInt8] { [] }
    public func encodeChecked() -> [UInt8] { [] }
}

/// The (empty) payload of `authReload`: the supervisor got SIGHUP, so the auth helper re-reads
/// its policy files (it keeps the running policy when they are broken).
public struct AuthReloadRequest: IPCMessage {
    @inlinable public static var frameType: FrameType { .authReload }

    public init() {}

    public init(decoding payload: [UInt8]) throws(IPCError) {
        try PayloadReader(payload).finish()
    }

    public func encode() -> [UInt8] { [] }
    public func encodeChecked() -> [UInt8] { [] }
}
