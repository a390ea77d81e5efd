/// Makes the ids handed out by `GET /{key}/id`: UUID v4, lower-case, as the Node server's
/// `crypto.randomUUID()`.
public enum PeerIdentifier {
    /// A random UUID v4 string (36 characters).
    public static func uuid4<G: RandomNumberGenerator>(using generator: inout G) -> String {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func uuid4() -> String {
        var generator = SystemRandomNumberGenerator()
        return uuid4(using: &generator)
    }
}
