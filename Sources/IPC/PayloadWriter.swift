/// Appends explicit, fixed-layout fields to a payload, so every message is encoded field by field
/// (big-endian integers, length-prefixed data) and never as a struct copy or JSON.
///
/// Caps are the reader's job: a writer encodes what it is given, and
/// ``IPCMessage/encodeChecked()`` decodes the result again before it is sent.
/// - Parameters:
///   - bytes: the payload built so far.
public struct PayloadWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(reservingCapacity capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func writeUInt8(_ value: UInt8) {
        bytes.append(value)
    }

    public mutating func writeUInt16(_ value: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    public mutating func writeUInt32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }

    public mutating func writeUInt64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    /// One byte, 0 or 1.
    public mutating func writeBool(_ value: Bool) {
        bytes.append(value ? 1 : 0)
    }

    /// u32 byte count, then the bytes.
    public mutating func writeBytes(_ value: [UInt8]) {
        writeUInt32(UInt32(truncatingIfNeeded: value.count))
        bytes.append(contentsOf: value)
    }

    /// u32 byte count, then the UTF-8 bytes (copied straight from the string: no array between).
    public mutating func writeString(_ value: String) {
        let utf8 = value.utf8
        writeUInt32(UInt32(truncatingIfNeeded: utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// The bytes as they are, without a count (a payload after its frame header).
    public mutating func writeRaw(_ value: [UInt8]) {
        bytes.append(contentsOf: value)
    }

    /// u32 element count, then each string as in ``writeString(_:)``.
    public mutating func writeStringList(_ value: [String]) {
        writeUInt32(UInt32(truncatingIfNeeded: value.count))
        for s in value { writeString(s) }
    }

    /// u8 family (0, 4 or 6), the 0, 4 or 16 address bytes, then the u16 port.
    public mutating func writePeerAddress(_ value: PeerAddress) {
        writeUInt8(value.family.rawValue)
        bytes.append(contentsOf: value.bytes)
        writeUInt16(value.port)
    }
}
