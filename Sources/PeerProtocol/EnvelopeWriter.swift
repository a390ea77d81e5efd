// Serialises outgoing envelopes (PROTOCOL.md §5, §7.4). Pure stdlib: no Foundation.

/// Builds the JSON frames the server sends.
///
/// Exists so a relayed message is rebuilt from exactly the four envelope fields, with `src`
/// set by the server (a client cannot spoof it), other top-level fields dropped, and the
/// client's payload copied byte for byte without being decoded or re-encoded.
///
/// Strings are escaped as `JSON.stringify` does: `"` and `\` with a backslash, `\b \f \n \r \t`
/// in their short forms, other control characters as `\u00XX`; `/` and non-ASCII text pass
/// through as UTF-8.
public enum EnvelopeWriter {
    /// Appends `{"type":…,"src":…,"dst":…,"payload":<raw bytes>}` to `out` — fields in that
    /// order, absent (nil) ones omitted. The payload must be one valid JSON value (for example a
    /// range returned by ``EnvelopeParser``); it is copied verbatim. An empty payload is omitted,
    /// since no JSON value is empty.
    public static func write(
        type: String, src: String?, dst: String?, payload: UnsafeRawBufferPointer?, into out: inout [UInt8]
    ) {
        let payloadCount = payload?.count ?? 0
        out.reserveCapacity(
            out.count + 40 + type.utf8.count + (src?.utf8.count ?? 0) + (dst?.utf8.count ?? 0) + payloadCount)
        out.append(contentsOf: #"{"type":"#.utf8)
        appendJSONString(type, to: &out)
        if let src {
            out.append(contentsOf: #","src":"#.utf8)
            appendJSONString(src, to: &out)
        }
        if let dst {
            out.append(contentsOf: #","dst":"#.utf8)
            appendJSONString(dst, to: &out)
        }
        if let payload, payloadCount > 0 {
            out.append(contentsOf: #","payload":"#.utf8)
            out.append(contentsOf: payload)
        }
        out.append(EnvelopeASCII.closeBrace)
    }

    /// `{"type":…,"src":…,"dst":…,"payload":<raw bytes>}` — fields in that order, absent ones omitted.
    public static func encode(type: String, src: String?, dst: String?, payload: UnsafeRawBufferPointer?) -> [UInt8] {
        var out: [UInt8] = []
        write(type: type, src: src, dst: dst, payload: payload, into: &out)
        return out
    }

    /// `{"type":"ERROR","payload":{"msg":"…"}}`, the fatal-error frame (PROTOCOL.md §10 strings).
    public static func error(_ message: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(40 + message.utf8.count)
        out.append(contentsOf: #"{"type":"ERROR","payload":{"msg":"#.utf8)
        appendJSONString(message, to: &out)
        out.append(contentsOf: "}}".utf8)
        return out
    }

    /// `{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}`.
    public static func idTaken() -> [UInt8] {
        Array(#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#.utf8)
    }

    /// `{"type":"OPEN"}`, the registration-accepted frame.
    public static func open() -> [UInt8] {
        Array(#"{"type":"OPEN"}"#.utf8)
    }

    /// Appends `s` as a quoted JSON string.
    /// Appends `s` as a JSON string literal (quotes and escapes included).
    public static func appendJSONString(_ s: String, to out: inout [UInt8]) {
        out.append(EnvelopeASCII.quote)
        var s = s
        s.withUTF8 { utf8 in
            var runStart = 0
            for k in 0..<utf8.count {
                let c = utf8[k]
                guard c < 0x20 || c == EnvelopeASCII.quote || c == EnvelopeASCII.backslash else { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<k]))
                runStart = k + 1
                out.append(EnvelopeASCII.backslash)
                switch c {
                case EnvelopeASCII.quote, EnvelopeASCII.backslash: out.append(c)
                case 0x08: out.append(EnvelopeASCII.lowerB)
                case 0x0C: out.append(EnvelopeASCII.lowerF)
                case 0x0A: out.append(EnvelopeASCII.lowerN)
                case 0x0D: out.append(EnvelopeASCII.lowerR)
                case 0x09: out.append(EnvelopeASCII.lowerT)
                default:
                    out.append(EnvelopeASCII.lowerU)
                    out.append(EnvelopeASCII.zero)
                    out.append(EnvelopeASCII.zero)
                    out.append(hexDigit(c >> 4))
                    out.append(hexDigit(c & 0xF))
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...]))
        }
        out.append(EnvelopeASCII.quote)
    }

    @inline(__always) private static func hexDigit(_ v: UInt8) -> UInt8 {
        v < 10 ? 0x30 + v : 0x61 + v - 10
    }
}
