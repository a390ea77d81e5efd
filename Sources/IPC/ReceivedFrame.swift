/// One checked frame as it came off a channel, owning the descriptor that travelled with it, so a
/// received connection socket is closed unless the handler takes it over.
/// - Parameters:
///   - header: the validated header.
///   - payload: exactly `header.payloadLength` bytes.
///   - fd: the descriptor (only for types that carry one); take it with ``takeFD()``.
///   - descriptorLost: the frame was sent with a descriptor that the kernel could not install
///     here (this process's descriptor table was full: `MSG_CTRUNC`); `fd` is nil. The frame is
///     otherwise whole, and the channel is fine.
public struct ReceivedFrame: ~Copyable, Sendable {
    public let header: FrameHeader
    public private(set) var payload: [UInt8]
    public var fd: OwnedFD?
    public let descriptorLost: Bool

    public init(header: FrameHeader, payload: [UInt8], fd: consuming OwnedFD?, descriptorLost: Bool = false) {
        self.header = header
        self.payload = payload
        self.fd = fd
        self.descriptorLost = descriptorLost
    }

    public var type: FrameType { header.type }
    public var requestID: UInt32 { header.requestID }

    /// Decodes the payload as `M` (strictly: caps, UTF-8, no trailing bytes), only if this frame
    /// is of `M`'s own type: asking for another is a bug in the receiver
    /// (``IPCError/Code/invalidArgument``).
    @inlinable
    public func decode<M: IPCMessage>(_: M.Type = M.self) throws(IPCError) -> M {
        guard header.type == M.frameType else {
            throw IPCError(.invalidArgument, "a \(header.type.name) frame cannot be decoded as \(M.self), which travels in \(M.frameType.name) frames; this is a bug in the receiver")
        }
        return try M(decoding: payload)
    }

    /// Zeroes the payload (explicit_bzero) once it has been decoded, for types that carry key
    /// material (``FrameType/carriesSecret``): the frame is the payload's only owner by then.
    public mutating func wipePayload() {
        SecretBytes.wipe(&payload)
    }

    /// Moves the descriptor out (nil if there is none, or it was already taken).
    public mutating func takeFD() -> OwnedFD? {
        fd.take()
    }
}
