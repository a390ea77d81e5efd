/// The payload of `reload`: the broker's new settings after SIGHUP. Its own type (the encoding
/// is ``BrokerSettings``'s) because each message travels under exactly one frame type, and
/// settings that start a broker (`hello`) must not be taken for a reload, or the reverse.
/// - Parameters:
///   - settings: the whole new configuration.
public struct BrokerReload: IPCMessage {
    @inlinable public static var frameType: FrameType { .reload }

    public var settings: BrokerSettings

    public init(_ settings: BrokerSettings) {
        self.settings = settings
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        settings = try BrokerSettings(decoding: payload)
    }

    public func encode() -> [UInt8] { settings.encode() }
}
