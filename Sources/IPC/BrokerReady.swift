/// The (empty) payload of `ready`: the broker has dropped privileges and installed its sandbox,
/// so the supervisor may start handing it connections. A typed value keeps "empty" checked.
public struct BrokerReady: IPCMessage {
    public init() {}

    public init(decoding payload: [UInt8]) throws(IPCError) {
        try PayloadReader(payload).finish()
    }

    public func encode() -> [UInt8] { [] }
}
