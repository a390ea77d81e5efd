import FuzzSupport
import PeerProtocol

/// libFuzzer's entry. The first byte picks the parser: even, a client message through
/// `EnvelopeParser` (checked against the plain reference parser below, and relayed through
/// `EnvelopeWriter` and parsed again); odd, a WebSocket query string through
/// `RegistrationRequest(query:)` (checked against a reference form decoder and the id rules).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzEnvelope(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let all = UnsafeRawBufferPointer(start: data, count: size)
    guard let selector = all.first else { return 0 }
    let input = UnsafeRawBufferPointer(rebasing: all.dropFirst())
    if selector & 1 == 0 {
        checkEnvelope(input)
    } else {
        checkQuery(input)
    }
    return 0
}

@main
enum FuzzEnvelope {
    static func main() { FuzzMain.run(fuzzEnvelope) }
}

// MARK: - Envelope

func checkEnvelope(_ input: UnsafeRawBufferPointer) {
    let envelope = EnvelopeParser.parse(input)
    let expected = ReferenceJSON.envelope(Array(input))
    guard envelope == expected else {
        fatalError(
            "EnvelopeParser gave \(String(describing: envelope)), the reference parser \(String(describing: expected))")
    }
    guard let envelope else { return }
    if let range = envelope.payload {
        precondition(!range.isEmpty && range.lowerBound >= 0 && range.upperBound <= input.count, "payload \(range)")
    }
    // The broker relays a message as type, server-chosen src, dst and the payload bytes: what
    // it sends must parse to the same fields again (the receiving client runs JSON.parse on it).
    guard let type = envelope.type else { return }
    let payload = envelope.payload.map { UnsafeRawBufferPointer(rebasing: input[$0]) }
    let relayed = EnvelopeWriter.encode(type: type.wireName, src: "server-chosen", dst: envelope.dst, payload: payload)
    guard let again = EnvelopeParser.parse(relayed) else {
        fatalError("the relayed message does not parse: \(String(decoding: relayed, as: UTF8.self))")
    }
    precondition(again.type == type && again.dst == envelope.dst, "relay changed type or dst")
    if let payload {
        precondition(again.payload.map { relayed[$0].elementsEqual(payload) } == true, "relay changed the payload")
    } else {
        precondition(again.payload == nil, "relay invented a payload")
    }
}

/// A deliberately plain recursive JSON reader with the rules `EnvelopeParser` documents
/// (RFC 8259, top-level object, depth ≤ `EnvelopeParser.maxDepth`, last duplicate wins, keys
/// compared unescaped, lone surrogate escapes accepted and decoded as U+FFFD), so the fast
/// single-pass parser has something to be compared with.
struct ReferenceJSON {
    let bytes: [UInt8]
    var index = 0

    static func envelope(_ bytes: [UInt8]) -> Envelope? {
        var reader = ReferenceJSON(bytes: bytes)
        return reader.document()
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        guard current == byte else { return false }
        index += 1
        return true
    }

    mutating func document() -> Envelope? {
        var envelope = Envelope()
        skipWhitespace()
        guard consume(UInt8(ascii: "{")) else { return nil }
        skipWhitespace()
        if !consume(UInt8(ascii: "}")) {
            while true {
                skipWhitespace()
                guard let key = string() else { return nil }
                skipWhitespace()
                guard consume(UInt8(ascii: ":")) else { return nil }
                skipWhitespace()
                let start = index
                let isString = current == UInt8(ascii: "\"")
                guard value(depth: 1) else { return nil }
                let text: String? = isString ? Self.decode(Array(bytes[(start + 1)..<(index - 1)])) : nil
                switch key {
                case Array("type".utf8): envelope.type = text.map(MessageType.init(wireName:))
                case Array("dst".utf8): envelope.dst = text
                case Array("payload".utf8): envelope.payload = start..<index
                default: break
                }
                skipWhitespace()
                if consume(UInt8(ascii: ",")) { continue }
                guard consume(UInt8(ascii: "}")) else { return nil }
                break
            }
        }
        skipWhitespace()
        return index == bytes.count ? envelope : nil
    }

    /// One value; `depth` is the nesting of the container holding it (the top level is 1).
    private mutating func value(depth: Int) -> Bool {
        skipWhitespace()
        switch current {
        case UInt8(ascii: "{")?:
            guard depth + 1 <= EnvelopeParser.maxDepth else { return false }
            index += 1
            skipWhitespace()
            if consume(UInt8(ascii: "}")) { return true }
            while true {
                skipWhitespace()
                guard string() != nil else { return false }
                skipWhitespace()
                guard consume(UInt8(ascii: ":")), value(depth: depth + 1) else { return false }
                skipWhitespace()
                if consume(UInt8(ascii: ",")) { continue }
                return consume(UInt8(ascii: "}"))
            }
        case UInt8(ascii: "[")?:
            guard depth + 1 <= EnvelopeParser.maxDepth else { return false }
            index += 1
            skipWhitespace()
            if consume(UInt8(ascii: "]")) { return true }
            while true {
                guard value(depth: depth + 1) else { return false }
                skipWhitespace()
                if consume(UInt8(ascii: ",")) { continue }
                return consume(UInt8(ascii: "]"))
            }
        case UInt8(ascii: "\"")?:
            return string() != nil
        case UInt8(ascii: "t")?: return literal("true")
        case UInt8(ascii: "f")?: return literal("false")
        case UInt8(ascii: "n")?: return literal("null")
        default:
            return number()
        }
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard bytes.count - index >= expected.count,
            bytes[index..<(index + expected.count)].elementsEqual(expected)
        else { return false }
        index += expected.count
        return true
    }

    private func isDigit(_ byte: UInt8?) -> Bool { byte.map { $0 >= 0x30 && $0 <= 0x39 } ?? false }

    private mutating func number() -> Bool {
        _ = consume(UInt8(ascii: "-"))
        if consume(UInt8(ascii: "0")) {
        } else if isDigit(current) {
            while isDigit(current) { index += 1 }
        } else {
            return false
        }
        if consume(UInt8(ascii: ".")) {
            guard isDigit(current) else { return false }
            while isDigit(current) { index += 1 }
        }
        if consume(UInt8(ascii: "e")) || consume(UInt8(ascii: "E")) {
            if !consume(UInt8(ascii: "+")) { _ = consume(UInt8(ascii: "-")) }
            guard isDigit(current) else { return false }
            while isDigit(current) { index += 1 }
        }
        return true
    }

    /// A string at `index`; returns its unescaped UTF-8 bytes (for keys), nil when invalid.
    private mutating func string() -> [UInt8]? {
        guard consume(UInt8(ascii: "\"")) else { return nil }
        let start = index
        while let byte = current, byte != UInt8(ascii: "\"") {
            if byte < 0x20 { return nil }
            index += 1
            if byte == UInt8(ascii: "\\") {
                guard let escape = current else { return nil }
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    break
                case UInt8(ascii: "u"):
                    guard bytes.count - index >= 4, bytes[index..<(index + 4)].allSatisfy({ Self.hex($0) != nil })
                    else { return nil }
                    index += 4
                default:
                    return nil
                }
            }
        }
        guard consume(UInt8(ascii: "\"")) else { return nil }
        let raw = Array(bytes[start..<(index - 1)])
        guard String(validating: raw, as: UTF8.self) != nil else { return nil }
        return Array(Self.decode(raw).utf8)
    }

    private static func hex(_ byte: UInt8) -> UInt32? {
        switch byte {
        case 0x30...0x39: UInt32(byte - 0x30)
        case 0x41...0x46: UInt32(byte - 0x41 + 10)
        case 0x61...0x66: UInt32(byte - 0x61 + 10)
        default: nil
        }
    }

    /// Unescapes a valid string body: pairs of surrogate escapes join, lone ones are U+FFFD.
    static func decode(_ raw: [UInt8]) -> String {
        var scalars = String.UnicodeScalarView()
        var plain: [UInt8] = []
        func flush() {
            scalars.append(contentsOf: String(decoding: plain, as: UTF8.self).unicodeScalars)
            plain.removeAll()
        }
        func hex4(_ at: Int) -> UInt32 { raw[at..<(at + 4)].reduce(0) { $0 << 4 | hex($1)! } }
        var k = 0
        while k < raw.count {
            guard raw[k] == UInt8(ascii: "\\") else {
                plain.append(raw[k])
                k += 1
                continue
            }
            let escape = raw[k + 1]
            k += 2
            switch escape {
            case UInt8(ascii: "b"): plain.append(0x08)
            case UInt8(ascii: "f"): plain.append(0x0C)
            case UInt8(ascii: "n"): plain.append(0x0A)
            case UInt8(ascii: "r"): plain.append(0x0D)
            case UInt8(ascii: "t"): plain.append(0x09)
            case UInt8(ascii: "u"):
                flush()
                var code = hex4(k)
                k += 4
                if (0xD800...0xDBFF).contains(code), raw.count - k >= 6, raw[k] == UInt8(ascii: "\\"),
                    raw[k + 1] == UInt8(ascii: "u"), (0xDC00...0xDFFF).contains(hex4(k + 2))
                {
                    code = 0x10000 + ((code - 0xD800) << 10) + (hex4(k + 2) - 0xDC00)
                    k += 6
                }
                scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
            default: plain.append(escape)
            }
        }
        flush()
        return String(scalars)
    }
}

// MARK: - Query string

func checkQuery(_ input: UnsafeRawBufferPointer) {
    let query = Substring(String(decoding: input, as: UTF8.self))
    let request = RegistrationRequest(query: query)
    // The first occurrence of each parameter, decoded by a plain reference decoder.
    var seen: [String: [UInt8]] = [:]
    for pair in Array(query.utf8).split(separator: UInt8(ascii: "&")) {
        let equals = pair.firstIndex(of: UInt8(ascii: "=")) ?? pair.endIndex
        let name = String(decoding: referenceFormDecode(pair[..<equals]), as: UTF8.self)
        if seen[name] == nil {
            seen[name] = equals == pair.endIndex ? [] : referenceFormDecode(pair[(equals + 1)...])
        }
    }
    func expect(_ value: String?, _ name: String, _ flag: RegistrationRequest.Parameters?) {
        let bytes = seen[name]
        precondition(value == bytes.map { String(decoding: $0, as: UTF8.self) }, "\(name) decoded differently")
        if let flag {
            let valid = bytes.map { String(validating: $0, as: UTF8.self) != nil } ?? true
            precondition(request.notUTF8.contains(flag) == !valid, "\(name): notUTF8 is wrong")
        }
    }
    expect(request.id, "id", .id)
    expect(request.token, "token", .token)
    expect(request.key, "key", .key)
    expect(request.version, "version", nil)
    // The id rule, on bytes in the parser; on scalars here.
    if let id = request.id {
        let acceptable = id.utf8.count <= RegistrationRequest.maxIDBytes && id.unicodeScalars.allSatisfy { scalar in
            let v = scalar.value
            return !(v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v) || v == 0x2028 || v == 0x2029)
        }
        precondition(RegistrationRequest.isAcceptableID(id) == acceptable, "isAcceptableID(\(id.debugDescription))")
        if !acceptable || request.notUTF8.contains(.id) { precondition(request.violation != nil, "violation missed") }
    }
    _ = request.violation
}

/// `application/x-www-form-urlencoded` decoding, as plainly as possible: `+` is a space, `%XY`
/// with two hex digits a byte, anything else itself.
func referenceFormDecode(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
    let bytes = Array(bytes)
    func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
    var out: [UInt8] = []
    var k = 0
    while k < bytes.count {
        if bytes[k] == UInt8(ascii: "+") {
            out.append(0x20)
        } else if bytes[k] == UInt8(ascii: "%"), k + 2 < bytes.count, let high = hex(bytes[k + 1]),
            let low = hex(bytes[k + 2])
        {
            out.append(high << 4 | low)
            k += 2
        } else {
            out.append(bytes[k])
        }
        k += 1
    }
    return out
}
