/// Reads the fields a ``PayloadWriter`` wrote, checking every length against the bytes left and
/// against a per-field cap, so a hostile or broken peer gets an error, never a crash or a huge
/// allocation. Call ``finish()`` last: a payload must end exactly where decoding ends.
/// - Parameters:
///   - remaining: how many bytes have not been read yet.
public struct PayloadReader: Sendable {
    private let bytes: ArraySlice<UInt8>
    private var index: Int

    public init(_ bytes: [UInt8]) {
        self.init(bytes[...])
    }

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    public var remaining: Int { bytes.endIndex - index }

    /// `what` names the field in the error; an autoclosure, so that a read that succeeds (every
    /// read, on a healthy channel) builds no string.
    private mutating func take(_ count: Int, _ what: @autoclosure () -> String) throws(IPCError) -> ArraySlice<UInt8> {
        guard count <= remaining else {
            throw IPCError(.truncated, "payload ends \(count - remaining) bytes short of \(what()); the peer is broken, close the channel")
        }
        let slice = bytes[index..<(index + count)]
        index += count
        return slice
    }

    private mutating func readBigEndian<T: FixedWidthInteger>(_: T.Type, _ what: StaticString) throws(IPCError) -> T {
        var value: T = 0
        for byte in try take(MemoryLayout<T>.size, "\(what)") {
            value = (value << 8) | T(byte)
        }
        return value
    }

    public mutating func readUInt8() throws(IPCError) -> UInt8 { try readBigEndian(UInt8.self, "a u8") }
    public mutating func readUInt16() throws(IPCError) -> UInt16 { try readBigEndian(UInt16.self, "a u16") }
    public mutating func readUInt32() throws(IPCError) -> UInt32 { try readBigEndian(UInt32.self, "a u32") }
    public mutating func readUInt64() throws(IPCError) -> UInt64 { try readBigEndian(UInt64.self, "a u64") }

    /// One byte that must be 0 or 1.
    public mutating func readBool() throws(IPCError) -> Bool {
        switch try readUInt8() {
        case 0: return false
        case 1: return true
        case let other:
            throw IPCError(.malformedPayload, "bool field holds \(other), only 0 and 1 are allowed; the peer is broken, close the channel")
        }
    }

    /// u32 byte count (at most `maxLength`), then the bytes.
    public mutating func readBytes(maxLength: Int) throws(IPCError) -> [UInt8] {
        let length = try readUInt32()
        guard length <= maxLength else {
            throw IPCError(.oversize, "field of \(length) bytes exceeds its cap of \(maxLength); the peer is broken, close the channel")
        }
        return Array(try take(Int(length), "a \(length)-byte field"))
    }

    /// u32 byte count (at most `maxLength` UTF-8 bytes), then valid UTF-8.
    public mutating func readString(maxLength: Int) throws(IPCError) -> String {
        let raw = try readBytes(maxLength: maxLength)
        guard let string = String(validating: raw, as: UTF8.self) else {
            throw IPCError(.malformedPayload, "string field of \(raw.count) bytes is not valid UTF-8; the peer is broken, close the channel")
        }
        return string
    }

    /// u32 count (at most `maxCount`), then that many strings of at most `maxLength` bytes each.
    public mutating func readStringList(maxCount: Int, maxLength: Int) throws(IPCError) -> [String] {
        let count = try readUInt32()
        guard count <= maxCount else {
            throw IPCError(.oversize, "list of \(count) strings exceeds its cap of \(maxCount); the peer is broken, close the channel")
        }
        var list: [String] = []
        list.reserveCapacity(min(Int(count), remaining / 4))
        for _ in 0..<count {
            list.append(try readString(maxLength: maxLength))
        }
        return list
    }

    /// u8 family (0 none, 4 IPv4, 6 IPv6), 0/4/16 address bytes, u16 port (0 for none).
    public mutating func readPeerAddress() throws(IPCError) -> PeerAddress {
        let rawFamily = try readUInt8()
        guard let family = PeerAddress.Family(rawValue: rawFamily) else {
            throw IPCError(.malformedPayload, "address family \(rawFamily) is not 0, 4 or 6; the peer is broken, close the channel")
        }
        let address = Array(try take(family.addressLength, "a \(family) address"))
        let port = try readUInt16()
        return try PeerAddress(family: family, bytes: address, port: port)
    }

    /// Throws unless every byte of the payload has been read.
    public func finish() throws(IPCError) {
        guard remaining == 0 else {
            throw IPCError(.malformedPayload, "payload has \(remaining) trailing bytes after the last field; the peer is broken or a different version, close the channel")
        }
    }
}
