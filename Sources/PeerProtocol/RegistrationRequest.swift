/// The `id`, `token` and `key` a WebSocket client presents in its query string, decoded as
/// `application/x-www-form-urlencoded` (percent-decoding and `+` as space, PROTOCOL.md E5).
public struct RegistrationRequest: Sendable, Equatable {
    public var id: String?
    public var token: String?
    public var key: String?
    /// The client library version (`version=`), sent by peerjs 1.4 and later.
    public var version: String?

    public init(id: String?, token: String?, key: String?, version: String? = nil) {
        self.id = id
        self.token = token
        self.key = key
        self.version = version
    }

    /// Reads the parameters out of a raw query string (without the leading `?`).
    /// The first occurrence of a parameter wins; unknown parameters are ignored.
    public init(query: Substring) {
        self.init(id: nil, token: nil, key: nil)
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = Self.formDecode(parts[0])
            let value = parts.count > 1 ? Self.formDecode(parts[1]) : ""
            switch name {
            case "id" where id == nil: id = value
            case "token" where token == nil: token = value
            case "key" where key == nil: key = value
            case "version" where version == nil: version = value
            default: break
            }
        }
    }

    /// Percent-decodes `text` and turns `+` into a space; a malformed escape is kept as written.
    public static func formDecode(_ text: Substring) -> String {
        let utf8 = Array(text.utf8)
        guard utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else {
            return String(text)
        }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        var index = 0
        while index < utf8.count {
            let byte = utf8[index]
            if byte == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), index + 2 < utf8.count,
                let high = hexValue(utf8[index + 1]), let low = hexValue(utf8[index + 2])
            {
                out.append(high << 4 | low)
                index += 2
            } else {
                out.append(byte)
            }
            index += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
