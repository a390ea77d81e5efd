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
    /// The first occurrence of a parameter wins; unknown parameters are ignored. Works on the
    /// UTF-8 bytes: `&` and `=` are ASCII, and splitting by Character cost more than the rest of
    /// a registration with a JWT-sized token.
    public init(query: Substring) {
        self.init(id: nil, token: nil, key: nil)
        for pair in query.utf8.split(separator: UInt8(ascii: "&")) {
            let equals = pair.firstIndex(of: UInt8(ascii: "=")) ?? pair.endIndex
            let name = Self.formDecode(pair[..<equals])
            let value = equals == pair.endIndex ? "" : Self.formDecode(pair[pair.index(after: equals)...])
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
        formDecode(text.utf8)
    }

    static func formDecode(_ utf8: Substring.UTF8View) -> String {
        guard utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else {
            return String(Substring(utf8))
        }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        var index = utf8.startIndex
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), let first = utf8.index(index, offsetBy: 1, limitedBy: utf8.endIndex),
                let second = utf8.index(index, offsetBy: 2, limitedBy: utf8.endIndex), second < utf8.endIndex,
                let high = hexValue(utf8[first]), let low = hexValue(utf8[second])
            {
                out.append(high << 4 | low)
                index = second
            } else {
                out.append(byte)
            }
            index = utf8.index(after: index)
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
