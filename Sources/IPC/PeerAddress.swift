public import Glibc

/// The client address of a handed-off connection, carried as plain bytes so the broker can log
/// and rate-limit by address without calling getpeername(2) (and so a sockaddr never crosses the
/// channel as a struct copy).
/// - Parameters:
///   - family: none, IPv4 or IPv6.
///   - bytes: the address in network order: 0, 4 or 16 bytes to match `family`.
///   - port: the TCP port (0 when `family` is none).
public struct PeerAddress: Hashable, CustomStringConvertible, Sendable {
    /// The address families the wire format knows; the raw value is the wire byte.
    public enum Family: UInt8, Sendable {
        case none = 0
        case ipv4 = 4
        case ipv6 = 6

        /// Address bytes on the wire for this family.
        public var addressLength: Int {
            switch self {
            case .none: 0
            case .ipv4: 4
            case .ipv6: 16
            }
        }
    }

    public let family: Family
    public let bytes: [UInt8]
    public let port: UInt16

    /// No address (for example a Unix-domain client).
    public static let none = PeerAddress(unchecked: .none, bytes: [], port: 0)

    private init(unchecked family: Family, bytes: [UInt8], port: UInt16) {
        self.family = family
        self.bytes = bytes
        self.port = port
    }

    /// Throws unless `bytes` has the length of `family` (and port is 0 for none).
    public init(family: Family, bytes: [UInt8], port: UInt16) throws(IPCError) {
        guard bytes.count == family.addressLength else {
            throw IPCError(.malformedPayload, "\(family) address needs \(family.addressLength) bytes, got \(bytes.count)")
        }
        guard family != .none || port == 0 else {
            throw IPCError(.malformedPayload, "an address of family none must have port 0, got \(port)")
        }
        self.init(unchecked: family, bytes: bytes, port: port)
    }

    /// The address of an accept(2)ed socket. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack listener reports for IPv4 clients) becomes the plain IPv4 address, so one client
    /// has one spelling in logs and limits. Families other than AF_INET/AF_INET6 give ``none``.
    public init(_ storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let sin = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            let address = withUnsafeBytes(of: sin.sin_addr) { Array($0) }
            self.init(unchecked: .ipv4, bytes: address, port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            let address = withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }
            let port = UInt16(bigEndian: sin6.sin6_port)
            if address[0..<10].allSatisfy({ $0 == 0 }) && address[10] == 0xff && address[11] == 0xff {
                self.init(unchecked: .ipv4, bytes: Array(address[12..<16]), port: port)
            } else {
                self.init(unchecked: .ipv6, bytes: address, port: port)
            }
        default:
            self = .none
        }
    }

    /// `127.0.0.1:5000`, `[::1]:5000`, or `none`.
    public var description: String {
        switch family {
        case .none:
            return "none"
        case .ipv4:
            return bytes.map { String($0) }.joined(separator: ".") + ":\(port)"
        case .ipv6:
            var in6 = in6_addr()
            withUnsafeMutableBytes(of: &in6) { $0.copyBytes(from: bytes) }
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            let ok = text.withUnsafeMutableBufferPointer { buffer in
                inet_ntop(AF_INET6, &in6, buffer.baseAddress, socklen_t(buffer.count)) != nil
            }
            let host = ok ? String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
            return "[\(host)]:\(port)"
        }
    }
}
