/// The `id`, `token` and `key` a WebSocket client presents in its query string, decoded as
/// `application/x-www-form-urlencoded` (percent-decoding and `+` as space, PROTOCOL.md E5).
public struct RegistrationRequest: Sendable, Equatable {
    public var id: String?
    public var token: String?
    public var key: String?
    /// The client library version (`version=`), sent by peerjs 1.4 and later.
    public var version: String?
    /// The parameters whose form-decoded bytes were not UTF-8 (`id=%FF`). Their value holds
    /// U+FFFD in place of the bad bytes, and ``violation`` refuses them.
    public var notUTF8: Parameters

    /// A set of the parameters `id`, `token` and `key`, to say which of them broke a rule.
    public struct Parameters: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let id = Parameters(rawValue: 1)
        public static let token = Parameters(rawValue: 2)
        public static let key = Parameters(rawValue: 4)
    }

    public init(id: String?, token: String?, key: String?, version: String? = nil, notUTF8: Parameters = []) {
        self.id = id
        self.token = token
        self.key = key
        self.version = version
        self.notUTF8 = notUTF8
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
            let (value, isUTF8) = equals == pair.endIndex ? ("", true) : Self.decode(pair[pair.index(after: equals)...])
            switch name {
            case "id" where id == nil:
                id = value
                if !isUTF8 { notUTF8.insert(.id) }
            case "token" where token == nil:
                token = value
                if !isUTF8 { notUTF8.insert(.token) }
            case "key" where key == nil:
                key = value
                if !isUTF8 { notUTF8.insert(.key) }
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
        decode(utf8).text
    }

    /// Form-decodes `utf8`; `isUTF8` is false when the decoded bytes are not UTF-8 (each bad
    /// sequence is then U+FFFD in `text`).
    static func decode(_ utf8: Substring.UTF8View) -> (text: String, isUTF8: Bool) {
        guard utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else {
            return (String(Substring(utf8)), true)
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
        if let text = String(validating: out, as: UTF8.self) { return (text, true) }
        return (String(decoding: out, as: UTF8.self), false)
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

// MARK: - Rules for ids, tokens and keys (README, "Ids, tokens and keys")

extension RegistrationRequest {
    /// The longest id, in UTF-8 bytes (a PeerJS client's own ids are 36-character UUIDs).
    public static let maxIDBytes = 256
    /// The longest token, in UTF-8 bytes: room for the RS256 JWTs of identity providers (1–1.5 KiB).
    public static let maxTokenBytes = 4096
    /// The longest key, in UTF-8 bytes.
    public static let maxKeyBytes = 256

    /// Why the id, token or key is refused, checked in that order; nil when each one present
    /// passes. A value must be UTF-8 after form-decoding, at most its byte limit long, and hold
    /// no control character (C0 U+0000–U+001F, DEL U+007F, C1 U+0080–U+009F) and no U+2028 or
    /// U+2029 — so that none can break a log line or a hook's line-based protocol, nor create
    /// registry entries or offline queues keyed by megabyte-long strings. Absent or empty values
    /// are left to the missing-parameter check, which runs first (PROTOCOL.md §7.1 step 1).
    public var violation: RejectReason? {
        if let id, notUTF8.contains(.id) || !Self.isAcceptable(id, maxBytes: Self.maxIDBytes) {
            return .malformedID
        }
        if let token, notUTF8.contains(.token) || !Self.isAcceptable(token, maxBytes: Self.maxTokenBytes) {
            return .malformedToken
        }
        if let key, notUTF8.contains(.key) || !Self.isAcceptable(key, maxBytes: Self.maxKeyBytes) {
            return .malformedKey
        }
        return nil
    }

    /// Whether `text` could be a registered id (the id rule of ``violation``); a message whose
    /// `dst` could not is dropped without being queued.
    public static func isAcceptableID(_ text: String) -> Bool {
        isAcceptable(text, maxBytes: maxIDBytes)
    }

    /// At most `maxBytes` UTF-8 bytes and none of the refused characters. Works on the bytes
    /// (a `String` is valid UTF-8): C0 and DEL are single bytes, C1 is `C2 80`–`C2 9F`, and
    /// U+2028/U+2029 are `E2 80 A8`/`E2 80 A9`; `C2` and `E2` are always lead bytes.
    static func isAcceptable(_ text: String, maxBytes: Int) -> Bool {
        guard text.utf8.count <= maxBytes else { return false }
        if let verdict = text.utf8.withContiguousStorageIfAvailable(hasNoRefusedCharacter) { return verdict }
        return Array(text.utf8).withUnsafeBufferPointer(hasNoRefusedCharacter)
    }

    private static func hasNoRefusedCharacter(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var previous: UInt8 = 0
        var beforePrevious: UInt8 = 0
        for byte in bytes {
            if byte < 0x20 || byte == 0x7F { return false }
            if previous == 0xC2, byte <= 0x9F, byte >= 0x80 { return false }
            if beforePrevious == 0xE2, previous == 0x80, byte == 0xA8 || byte == 0xA9 { return false }
            beforePrevious = previous
            previous = byte
        }
        return true
    }
}
