// The message envelope and its single-pass parser (PROTOCOL.md §5, §7.4).
//
// The broker relays small JSON frames at a high rate. A full decode of every frame was measured
// 8–14× too slow, so this file holds a strict RFC 8259 validator that walks the bytes once,
// decodes only the top-level `type` and `dst` strings and records where `payload` sits, so the
// payload can be forwarded byte for byte. Pure stdlib: no Foundation.

/// The `type` of a PeerJS signalling message.
///
/// Exists so the broker can switch on a closed set of known types (PROTOCOL.md §5) without
/// comparing strings, while keeping any other type (`unknown`) for logging or pass-through.
public enum MessageType: Hashable, Sendable {
    case open, error, idTaken, invalidKey, heartbeat, offer, answer, candidate, leave, expire
    /// Any other type string, kept as sent (case-sensitive, like the reference server).
    case unknown(String)

    /// Maps a wire name (`"OFFER"`, `"ID-TAKEN"`, …) to its case; anything else is `.unknown`.
    public init(wireName: String) {
        switch wireName {
        case "OPEN": self = .open
        case "ERROR": self = .error
        case "ID-TAKEN": self = .idTaken
        case "INVALID-KEY": self = .invalidKey
        case "HEARTBEAT": self = .heartbeat
        case "OFFER": self = .offer
        case "ANSWER": self = .answer
        case "CANDIDATE": self = .candidate
        case "LEAVE": self = .leave
        case "EXPIRE": self = .expire
        default: self = .unknown(wireName)
        }
    }

    /// The exact string used on the wire for this type.
    public var wireName: String {
        switch self {
        case .open: "OPEN"
        case .error: "ERROR"
        case .idTaken: "ID-TAKEN"
        case .invalidKey: "INVALID-KEY"
        case .heartbeat: "HEARTBEAT"
        case .offer: "OFFER"
        case .answer: "ANSWER"
        case .candidate: "CANDIDATE"
        case .leave: "LEAVE"
        case .expire: "EXPIRE"
        case .unknown(let name): name
        }
    }
}

/// The part of a client message the server acts on.
///
/// Exists because the server must not decode or re-encode the rest: it reads `type` and `dst`,
/// forwards `payload` untouched (by byte range into the received frame), drops every other
/// top-level field, and never trusts a client's `src` (so `src` is deliberately not captured).
public struct Envelope: Sendable, Equatable {
    /// nil when `type` is absent or its (last) value is not a string.
    public var type: MessageType?
    /// nil when absent, `null` or not a string; `""` stays `""` (callers treat it as missing, §14 E6).
    public var dst: String?
    /// Byte range of the raw `payload` JSON value inside the parsed input; nil when absent.
    /// `"payload":null` gives a range covering `null`. Never empty when present.
    public var payload: Range<Int>?

    /// An envelope with the given fields (all absent by default), e.g. for tests and server-made messages.
    public init(type: MessageType? = nil, dst: String? = nil, payload: Range<Int>? = nil) {
        self.type = type
        self.dst = dst
        self.payload = payload
    }
}

/// Strict, allocation-light parser for client messages.
///
/// Exists so that every frame is validated as a whole JSON document (RFC 8259) in one pass
/// while only the envelope is decoded. Rules, chosen to match JavaScript's `JSON.parse` where
/// RFC 8259 leaves room:
/// - the top level must be an object; trailing non-whitespace is rejected; no BOM;
/// - duplicate keys: the last one wins; keys are compared after unescaping (`"\u0074ype"` is `type`);
/// - lone surrogate escapes (`"\ud800"`) are accepted, as `JSON.parse` does; when such a string
///   is decoded (for `type`/`dst`) each lone surrogate becomes U+FFFD, since a Swift `String`
///   cannot hold one;
/// - raw bytes must be valid UTF-8 (no overlongs, no encoded surrogates, nothing above U+10FFFF);
/// - nesting deeper than ``maxDepth`` (the top-level object counts as 1) is rejected, without recursion.
public enum EnvelopeParser {
    /// Deepest accepted nesting of objects/arrays, the top-level object included.
    public static let maxDepth = 64

    /// nil when the bytes are not one complete, valid JSON document whose top level is an object.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Envelope? {
        var scanner = JSONScanner(bytes)
        return scanner.parseEnvelope()
    }

    /// nil when the bytes are not one complete, valid JSON document whose top level is an object.
    public static func parse(_ bytes: [UInt8]) -> Envelope? {
        bytes.withUnsafeBytes { parse($0) }
    }
}

// MARK: - Scanner

/// EnvelopeASCII codes used by the scanner and the writer.
enum EnvelopeASCII {
    static let quote: UInt8 = 0x22, backslash: UInt8 = 0x5C, slash: UInt8 = 0x2F
    static let comma: UInt8 = 0x2C, colon: UInt8 = 0x3A, minus: UInt8 = 0x2D, plus: UInt8 = 0x2B
    static let dot: UInt8 = 0x2E, zero: UInt8 = 0x30, one: UInt8 = 0x31, nine: UInt8 = 0x39
    static let openBrace: UInt8 = 0x7B, closeBrace: UInt8 = 0x7D
    static let openBracket: UInt8 = 0x5B, closeBracket: UInt8 = 0x5D
    static let space: UInt8 = 0x20, tab: UInt8 = 0x09, lf: UInt8 = 0x0A, cr: UInt8 = 0x0D
    static let lowerB: UInt8 = 0x62, lowerE: UInt8 = 0x65, upperE: UInt8 = 0x45, lowerF: UInt8 = 0x66
    static let lowerN: UInt8 = 0x6E, lowerR: UInt8 = 0x72, lowerT: UInt8 = 0x74, lowerU: UInt8 = 0x75
}

/// Which top-level member a key names.
private enum Field { case type, dst, payload, other }

/// A cursor over the input. `peek()` returns 0 at the end: a NUL byte is invalid in every
/// position where `peek()` is used, so the sentinel cannot be mistaken for valid input.
private struct JSONScanner {
    let buf: UnsafeRawBufferPointer
    let end: Int
    var i = 0

    init(_ buf: UnsafeRawBufferPointer) {
        self.buf = buf
        self.end = buf.count
    }

    @inline(__always) func peek() -> UInt8 { i < end ? buf[i] : 0 }

    @inline(__always) mutating func skipWhitespace() {
        while i < end {
            let c = buf[i]
            guard c == EnvelopeASCII.space || c == EnvelopeASCII.lf || c == EnvelopeASCII.cr || c == EnvelopeASCII.tab else { return }
            i += 1
        }
    }

    // MARK: Envelope

    mutating func parseEnvelope() -> Envelope? {
        var envelope = Envelope()
        skipWhitespace()
        guard peek() == EnvelopeASCII.openBrace else { return nil }
        i += 1
        skipWhitespace()
        if peek() == EnvelopeASCII.closeBrace {
            i += 1
        } else {
            while true {
                guard peek() == EnvelopeASCII.quote else { return nil }
                i += 1
                let keyStart = i
                var keyEscaped = false
                guard scanStringBody(escaped: &keyEscaped) else { return nil }
                let field = classify(keyStart, i - 1, escaped: keyEscaped)
                skipWhitespace()
                guard peek() == EnvelopeASCII.colon else { return nil }
                i += 1
                skipWhitespace()
                switch field {
                case .type, .dst:
                    var value: String?
                    if peek() == EnvelopeASCII.quote {
                        i += 1
                        let valueStart = i
                        var valueEscaped = false
                        guard scanStringBody(escaped: &valueEscaped) else { return nil }
                        value = decodeString(valueStart, i - 1, escaped: valueEscaped)
                    } else {
                        guard skipValue() else { return nil }
                    }
                    if field == .type {
                        envelope.type = value.map(MessageType.init(wireName:))
                    } else {
                        envelope.dst = value
                    }
                case .payload:
                    let start = i
                    guard skipValue() else { return nil }
                    envelope.payload = start..<i
                case .other:
                    guard skipValue() else { return nil }
                }
                skipWhitespace()
                let c = peek()
                if c == EnvelopeASCII.comma {
                    i += 1
                    skipWhitespace()
                } else if c == EnvelopeASCII.closeBrace {
                    i += 1
                    break
                } else {
                    return nil
                }
            }
        }
        skipWhitespace()
        return i == end ? envelope : nil
    }

    /// Classifies the key whose raw content (between the quotes) is `start..<end`.
    func classify(_ start: Int, _ end: Int, escaped: Bool) -> Field {
        if !escaped {
            let n = end - start
            if n == 4, buf[start] == 0x74, buf[start + 1] == 0x79, buf[start + 2] == 0x70, buf[start + 3] == 0x65 {
                return .type
            }
            if n == 3, buf[start] == 0x64, buf[start + 1] == 0x73, buf[start + 2] == 0x74 {
                return .dst
            }
            if n == 7, buf[start] == 0x70, buf[start + 1] == 0x61, buf[start + 2] == 0x79, buf[start + 3] == 0x6C,
                buf[start + 4] == 0x6F, buf[start + 5] == 0x61, buf[start + 6] == 0x64 {
                return .payload
            }
            return .other
        }
        // Each decoded byte needs at most 6 raw bytes ("\u0070"), so a longer key is not ours.
        guard end - start <= 6 * 7 else { return .other }
        let decoded = decodeBytes(start, end)
        if decoded.elementsEqual("type".utf8) { return .type }
        if decoded.elementsEqual("dst".utf8) { return .dst }
        if decoded.elementsEqual("payload".utf8) { return .payload }
        return .other
    }

    // MARK: Values

    /// Validates one JSON value starting at `i` (after whitespace) and leaves `i` just past it.
    /// Iterative: an explicit bit stack of container kinds bounds the nesting.
    mutating func skipValue() -> Bool {
        let maxNesting = EnvelopeParser.maxDepth - 1  // the top-level object is one level
        var isObject: UInt64 = 0  // bit d: the container at nesting level d+1 is an object
        var depth = 0
        while true {
            skipWhitespace()
            switch peek() {
            case EnvelopeASCII.openBrace:
                depth += 1
                guard depth <= maxNesting else { return false }
                isObject |= 1 << UInt64(depth - 1)
                i += 1
                skipWhitespace()
                if peek() == EnvelopeASCII.closeBrace {
                    i += 1
                    depth -= 1
                } else {
                    guard scanKeyAndColon() else { return false }
                    continue
                }
            case EnvelopeASCII.openBracket:
                depth += 1
                guard depth <= maxNesting else { return false }
                isObject &= ~(1 << UInt64(depth - 1))
                i += 1
                skipWhitespace()
                if peek() == EnvelopeASCII.closeBracket {
                    i += 1
                    depth -= 1
                } else {
                    continue
                }
            case EnvelopeASCII.quote:
                i += 1
                var escaped = false
                guard scanStringBody(escaped: &escaped) else { return false }
            case EnvelopeASCII.minus, EnvelopeASCII.zero...EnvelopeASCII.nine:
                guard scanNumber() else { return false }
            case EnvelopeASCII.lowerT:
                guard scanLiteral(0x74, 0x72, 0x75, 0x65) else { return false }  // true
            case EnvelopeASCII.lowerN:
                guard scanLiteral(0x6E, 0x75, 0x6C, 0x6C) else { return false }  // null
            case EnvelopeASCII.lowerF:
                guard i + 4 < end, buf[i + 4] == 0x65 else { return false }
                guard scanLiteral(0x66, 0x61, 0x6C, 0x73) else { return false }  // fals(e)
                i += 1
            default:
                return false
            }
            // A value is complete: close containers until another value is expected.
            while true {
                if depth == 0 { return true }
                skipWhitespace()
                let c = peek()
                let inObject = isObject & (1 << UInt64(depth - 1)) != 0
                if c == EnvelopeASCII.comma {
                    i += 1
                    if inObject {
                        skipWhitespace()
                        guard scanKeyAndColon() else { return false }
                    }
                    break
                }
                guard c == (inObject ? EnvelopeASCII.closeBrace : EnvelopeASCII.closeBracket) else { return false }
                i += 1
                depth -= 1
            }
        }
    }

    /// `"key"` then optional whitespace and `:`.
    @inline(__always) mutating func scanKeyAndColon() -> Bool {
        guard peek() == EnvelopeASCII.quote else { return false }
        i += 1
        var escaped = false
        guard scanStringBody(escaped: &escaped) else { return false }
        skipWhitespace()
        guard peek() == EnvelopeASCII.colon else { return false }
        i += 1
        return true
    }

    @inline(__always) mutating func scanLiteral(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> Bool {
        guard i + 3 < end, buf[i] == a, buf[i + 1] == b, buf[i + 2] == c, buf[i + 3] == d else { return false }
        i += 4
        return true
    }

    @inline(__always) func isDigit(_ k: Int) -> Bool {
        k < end && buf[k] &- EnvelopeASCII.zero < 10
    }

    /// RFC 8259 number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    mutating func scanNumber() -> Bool {
        if buf[i] == EnvelopeASCII.minus { i += 1 }
        guard i < end else { return false }
        let first = buf[i]
        if first == EnvelopeASCII.zero {
            i += 1
        } else if first >= EnvelopeASCII.one && first <= EnvelopeASCII.nine {
            i += 1
            while isDigit(i) { i += 1 }
        } else {
            return false
        }
        if i < end && buf[i] == EnvelopeASCII.dot {
            i += 1
            guard isDigit(i) else { return false }
            while isDigit(i) { i += 1 }
        }
        if i < end && (buf[i] == EnvelopeASCII.lowerE || buf[i] == EnvelopeASCII.upperE) {
            i += 1
            if i < end && (buf[i] == EnvelopeASCII.plus || buf[i] == EnvelopeASCII.minus) { i += 1 }
            guard isDigit(i) else { return false }
            while isDigit(i) { i += 1 }
        }
        return true
    }

    // MARK: Strings

    /// Validates a string body starting just after its opening quote; on success `i` is just
    /// past the closing quote. Sets `escaped` when the body holds a backslash escape.
    mutating func scanStringBody(escaped: inout Bool) -> Bool {
        while true {
            // Fast path: skip 8 plain ASCII bytes at a time (no quote, backslash, control or
            // non-ASCII byte). SWAR tests; byte order does not matter for "any byte is …".
            while i &+ 8 <= end {
                let w = buf.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                let ones: UInt64 = 0x0101_0101_0101_0101
                let highs: UInt64 = 0x8080_8080_8080_8080
                let quotes = w ^ (ones &* 0x22)
                let backslashes = w ^ (ones &* 0x5C)
                let special =
                    (w | (w &- ones &* 0x20)  // high bit: byte >= 0x80 or byte < 0x20
                        | (quotes &- ones) & ~quotes  // high bit: byte == '"' (when no byte >= 0x80)
                        | (backslashes &- ones) & ~backslashes) & highs
                if special != 0 { break }
                i &+= 8
            }
            guard i < end else { return false }
            let c = buf[i]
            if c == EnvelopeASCII.quote {
                i += 1
                return true
            }
            if c == EnvelopeASCII.backslash {
                escaped = true
                guard i + 1 < end else { return false }
                switch buf[i + 1] {
                case EnvelopeASCII.quote, EnvelopeASCII.backslash, EnvelopeASCII.slash, EnvelopeASCII.lowerB, EnvelopeASCII.lowerF, EnvelopeASCII.lowerN,
                    EnvelopeASCII.lowerR, EnvelopeASCII.lowerT:
                    i += 2
                case EnvelopeASCII.lowerU:
                    guard i + 5 < end, hexValue(buf[i + 2]) < 16, hexValue(buf[i + 3]) < 16,
                        hexValue(buf[i + 4]) < 16, hexValue(buf[i + 5]) < 16
                    else { return false }
                    i += 6
                default:
                    return false
                }
            } else if c < 0x20 {
                return false
            } else if c < 0x80 {
                i += 1
            } else {
                guard scanMultibyte(c) else { return false }
            }
        }
        return false
    }

    /// Validates one multi-byte UTF-8 sequence whose lead byte `lead` is at `i` (Unicode Table 3-7).
    @inline(__always) mutating func scanMultibyte(_ lead: UInt8) -> Bool {
        @inline(__always) func isContinuation(_ b: UInt8) -> Bool { b & 0xC0 == 0x80 }
        switch lead {
        case 0xC2...0xDF:
            guard i + 1 < end, isContinuation(buf[i + 1]) else { return false }
            i += 2
        case 0xE0...0xEF:
            guard i + 2 < end else { return false }
            let b1 = buf[i + 1]
            let low: UInt8 = lead == 0xE0 ? 0xA0 : 0x80  // no overlongs
            let high: UInt8 = lead == 0xED ? 0x9F : 0xBF  // no UTF-16 surrogates
            guard b1 >= low, b1 <= high, isContinuation(buf[i + 2]) else { return false }
            i += 3
        case 0xF0...0xF4:
            guard i + 3 < end else { return false }
            let b1 = buf[i + 1]
            let low: UInt8 = lead == 0xF0 ? 0x90 : 0x80  // no overlongs
            let high: UInt8 = lead == 0xF4 ? 0x8F : 0xBF  // nothing above U+10FFFF
            guard b1 >= low, b1 <= high, isContinuation(buf[i + 2]), isContinuation(buf[i + 3]) else {
                return false
            }
            i += 4
        default:
            return false
        }
        return true
    }

    /// Decodes a validated string body (raw content `start..<end`, quotes excluded).
    func decodeString(_ start: Int, _ end: Int, escaped: Bool) -> String {
        if !escaped {
            return String(decoding: UnsafeRawBufferPointer(rebasing: buf[start..<end]), as: UTF8.self)
        }
        return String(decoding: decodeBytes(start, end), as: UTF8.self)
    }

    /// Unescapes a validated string body into UTF-8; lone surrogates become U+FFFD.
    func decodeBytes(_ start: Int, _ end: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(end - start)
        var k = start
        while k < end {
            let c = buf[k]
            guard c == EnvelopeASCII.backslash else {
                out.append(c)
                k += 1
                continue
            }
            let e = buf[k + 1]
            k += 2
            switch e {
            case EnvelopeASCII.lowerB: out.append(0x08)
            case EnvelopeASCII.lowerF: out.append(0x0C)
            case EnvelopeASCII.lowerN: out.append(0x0A)
            case EnvelopeASCII.lowerR: out.append(0x0D)
            case EnvelopeASCII.lowerT: out.append(0x09)
            case EnvelopeASCII.lowerU:
                var scalar = hex4(at: k)
                k += 4
                if scalar & 0xFC00 == 0xD800, k + 5 < end, buf[k] == EnvelopeASCII.backslash, buf[k + 1] == EnvelopeASCII.lowerU {
                    let low = hex4(at: k + 2)
                    if low & 0xFC00 == 0xDC00 {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        k += 6
                    }
                }
                if scalar & 0xF800 == 0xD800 && scalar < 0x10000 { scalar = 0xFFFD }  // lone surrogate
                appendUTF8(scalar, to: &out)
            default: out.append(e)  // " \ /
            }
        }
        return out
    }

    @inline(__always) func hex4(at k: Int) -> UInt32 {
        UInt32(hexValue(buf[k])) << 12 | UInt32(hexValue(buf[k + 1])) << 8
            | UInt32(hexValue(buf[k + 2])) << 4 | UInt32(hexValue(buf[k + 3]))
    }
}

/// 0–15 for a hex digit, 255 otherwise.
@inline(__always) private func hexValue(_ c: UInt8) -> UInt8 {
    switch c {
    case 0x30...0x39: c &- 0x30
    case 0x41...0x46: c &- 0x41 &+ 10
    case 0x61...0x66: c &- 0x61 &+ 10
    default: 255
    }
}

@inline(__always) private func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
    switch scalar {
    case ..<0x80:
        out.append(UInt8(scalar))
    case ..<0x800:
        out.append(UInt8(0xC0 | scalar >> 6))
        out.append(UInt8(0x80 | scalar & 0x3F))
    case ..<0x10000:
        out.append(UInt8(0xE0 | scalar >> 12))
        out.append(UInt8(0x80 | scalar >> 6 & 0x3F))
        out.append(UInt8(0x80 | scalar & 0x3F))
    default:
        out.append(UInt8(0xF0 | scalar >> 18))
        out.append(UInt8(0x80 | scalar >> 12 & 0x3F))
        out.append(UInt8(0x80 | scalar >> 6 & 0x3F))
        out.append(UInt8(0x80 | scalar & 0x3F))
    }
}
