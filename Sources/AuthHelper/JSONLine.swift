/// The little JSON the policy-program protocol needs (the helper has no Foundation): writing a
/// flat object of strings, and reading the top-level fields of the program's answer.
public enum JSONLine {
    /// A top-level value of an answer; nested objects and arrays are skipped (`.other`).
    public enum Value: Sendable, Equatable {
        case string(String)
        case bool(Bool)
        case null
        case other
    }

    /// `{"k":"v",…}` in the order given, with JSON string escaping.
    public static func object(_ fields: [(String, String)]) -> String {
        "{" + fields.map { quote($0.0) + ":" + quote($0.1) }.joined(separator: ",") + "}"
    }

    public static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x2028 || scalar.value == 0x2029:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// The top-level fields of one JSON object, or nil when `line` is not one.
    public static func parseObject(_ line: some StringProtocol) -> [String: Value]? {
        var parser = Parser(Array(String(line).utf8))
        return parser.topLevelObject()
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        mutating func skipSpace() {
            while index < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[index]) { index += 1 }
        }

        mutating func expect(_ byte: UInt8) -> Bool {
            skipSpace()
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }

        mutating func topLevelObject() -> [String: Value]? {
            guard expect(UInt8(ascii: "{")) else { return nil }
            var fields: [String: Value] = [:]
            if expect(UInt8(ascii: "}")) { return finished(fields) }
            while true {
                skipSpace()
                guard let key = string(), expect(UInt8(ascii: ":")), let value = value(depth: 0) else { return nil }
                fields[key] = value
                if expect(UInt8(ascii: ",")) { continue }
                guard expect(UInt8(ascii: "}")) else { return nil }
                return finished(fields)
            }
        }

        mutating func finished(_ fields: [String: Value]) -> [String: Value]? {
            skipSpace()
            return index == bytes.count ? fields : nil
        }

        mutating func string() -> String? {
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
            index += 1
            var out: [UInt8] = []
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(validating: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard index < bytes.count else { return nil }
                    let escape = bytes[index]
                    index += 1
                    switch escape {
                    case UInt8(ascii: "n"): out.append(0x0a)
                    case UInt8(ascii: "r"): out.append(0x0d)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0c)
                    case UInt8(ascii: "u"):
                        guard index + 4 <= bytes.count,
                            let code = UInt32(String(decoding: bytes[index..<(index + 4)], as: UTF8.self), radix: 16)
                        else { return nil }
                        index += 4
                        // Surrogate pairs are not needed for reasons; a lone one becomes U+FFFD.
                        out += Array(String(Unicode.Scalar(code).map(Character.init) ?? "\u{FFFD}").utf8)
                    default: out.append(escape)
                    }
                default:
                    out.append(byte)
                }
            }
            return nil
        }

        mutating func value(depth: Int) -> Value? {
            skipSpace()
            guard index < bytes.count, depth < 32 else { return nil }
            switch bytes[index] {
            case UInt8(ascii: "\""):
                return string().map(Value.string)
            case UInt8(ascii: "t"): return literal("true", .bool(true))
            case UInt8(ascii: "f"): return literal("false", .bool(false))
            case UInt8(ascii: "n"): return literal("null", .null)
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                let close = bytes[index] == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
                let isObject = close == UInt8(ascii: "}")
                index += 1
                if expect(close) { return .other }
                while true {
                    if isObject {
                        skipSpace()
                        guard string() != nil, expect(UInt8(ascii: ":")) else { return nil }
                    }
                    guard value(depth: depth + 1) != nil else { return nil }
                    if expect(UInt8(ascii: ",")) { continue }
                    return expect(close) ? .other : nil
                }
            default:
                let start = index
                while index < bytes.count, "-+.eE0123456789".utf8.contains(bytes[index]) { index += 1 }
                return index > start ? .other : nil
            }
        }

        mutating func literal(_ word: String, _ value: Value) -> Value? {
            let utf8 = Array(word.utf8)
            guard index + utf8.count <= bytes.count, Array(bytes[index..<(index + utf8.count)]) == utf8 else { return nil }
            index += utf8.count
            return value
        }
    }
}
