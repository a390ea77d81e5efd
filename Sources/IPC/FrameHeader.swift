/// The fixed 16-byte header in front of every IPC record, so a receiver can check version, type,
/// length and descriptor presence before it looks at a single payload byte.
///
/// Wire layout, big-endian:
/// `u8 version (1) | u8 flags (bit0 HAS_FD, other bits 0) | u16 type | u32 payloadLength |
///  u32 requestID (0 = none) | u32 reserved (0)`.
/// - Parameters:
///   - type: the frame type (only types in the ``FrameType`` table can be represented).
///   - hasFD: the HAS_FD flag: one descriptor travels with this record.
///   - payloadLength: the number of payload bytes after the header.
///   - requestID: pairs a request with its answer; 0 means none.
public struct FrameHeader: Equatable, Sendable {
    /// Size of the encoded header in bytes.
    public static let size = 16
    /// The only version this code speaks.
    public static let currentVersion: UInt8 = 1
    /// Flag bit 0: a descriptor is attached.
    public static let hasFDFlag: UInt8 = 0x01

    public var type: FrameType
    public var hasFD: Bool
    public var payloadLength: UInt32
    public var requestID: UInt32

    public init(type: FrameType, payloadLength: UInt32, requestID: UInt32 = 0, hasFD: Bool) {
        self.type = type
        self.hasFD = hasFD
        self.payloadLength = payloadLength
        self.requestID = requestID
    }

    /// The 16 header bytes.
    public func encode() -> [UInt8] {
        var w = PayloadWriter(reservingCapacity: Self.size)
        encode(into: &w)
        return w.bytes
    }

    /// Appends the 16 header bytes to `w` (a record is built in one buffer).
    public func encode(into w: inout PayloadWriter) {
        w.writeUInt8(Self.currentVersion)
        w.writeUInt8(hasFD ? Self.hasFDFlag : 0)
        w.writeUInt16(type.rawValue)
        w.writeUInt32(payloadLength)
        w.writeUInt32(requestID)
        w.writeUInt32(0)
    }

    /// Decodes and checks the first 16 bytes of `bytes`: version, flag bits, reserved word,
    /// known type, and payload length within that type's cap. It does not look at the record
    /// length or at descriptors; ``FrameCodec/decode(record:fdAttached:roles:)`` does.
    public init(decoding bytes: [UInt8]) throws(IPCError) {
        guard bytes.count >= Self.size else {
            throw IPCError(.truncated, "record of \(bytes.count) bytes is shorter than the \(Self.size)-byte frame header; the peer is broken, close the channel")
        }
        var r = PayloadReader(bytes[0..<Self.size])
        let version = try r.readUInt8()
        let flags = try r.readUInt8()
        let rawType = try r.readUInt16()
        let length = try r.readUInt32()
        let requestID = try r.readUInt32()
        let reserved = try r.readUInt32()
        guard version == Self.currentVersion else {
            throw IPCError(.badVersion, "frame version \(version), this build speaks only version \(Self.currentVersion); run the same binary for every role")
        }
        guard flags & ~Self.hasFDFlag == 0 else {
            throw IPCError(.badFlags, "frame flags 0x\(String(flags, radix: 16)) set bits other than HAS_FD; the peer is broken, close the channel")
        }
        guard reserved == 0 else {
            throw IPCError(.badReserved, "frame reserved word is 0x\(String(reserved, radix: 16)), must be 0; the peer is broken, close the channel")
        }
        guard let type = FrameType(rawValue: rawType) else {
            throw IPCError(.unknownType, "frame type \(rawType) is not in the frame table; the peer is broken or a different version, close the channel")
        }
        guard length <= UInt32(type.maxPayload) else {
            throw IPCError(.oversize, "\(type.name) frame declares \(length) payload bytes, its cap is \(type.maxPayload); close the channel")
        }
        self.init(type: type, payloadLength: length, requestID: requestID, hasFD: flags & Self.hasFDFlag != 0)
    }
}
