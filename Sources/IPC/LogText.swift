/// Makes any text safe to put into one log line.
///
/// It exists because log records carry values clients and policy programs chose (a peer id, an
/// auth helper's reason, an `X-Forwarded-For` address): a newline in one of them would start a
/// line of its own, and under journald a line starting `<0>` is an emergency of whatever
/// process the attacker names. Every role's log handler passes the message and every metadata
/// value through ``escaped(_:)``, so one record is always exactly one line.
///
/// The scheme:
/// - `\n`, `\r` and `\t` become `\n`, `\r` and `\t` (a backslash and a letter);
/// - every other C0 control (U+0000–U+001F), DEL (U+007F) and C1 control (U+0080–U+009F)
///   becomes `\xHH`, the code point in two upper-case hex digits (`\x1B`, `\x7F`, `\x85`);
/// - U+2028 and U+2029 (line and paragraph separator) become `\u{2028}` and `\u{2029}`;
/// - a backslash is doubled when what follows it could be read as part of an escape: another
///   backslash, one of `n r t x u`, or a character that is escaped itself. Any other backslash
///   (`C:\Temp`, the `\"` of a JSON string) is kept as it is, so ordinary text stays readable.
///
/// So the output reads back without ambiguity: `\\` is one backslash; `\n`, `\r`, `\t`,
/// `\xHH` and `\u{HHHH}` are the escapes; any other backslash stands for itself. Text with
/// nothing to escape is returned unchanged (the common case costs one scan of its bytes).
public enum LogText {
    /// `text` with control characters, U+2028 and U+2029 escaped as described on ``LogText``.
    public static func escaped(_ text: String) -> String {
        guard text.utf8.contains(where: mayNeedEscaping) else { return text }
        let scalars = Array(text.unicodeScalars)
        var out = String()
        out.reserveCapacity(text.utf8.count + 16)
        for (index, scalar) in scalars.enumerated() {
            if isEscaped(scalar) {
                out += escape(scalar)
            } else if scalar == "\\", index + 1 < scalars.count, continuesEscape(scalars[index + 1]) {
                out += "\\\\"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Whether `scalar` is written as an escape: C0, DEL, C1, U+2028, U+2029.
    public static func isEscaped(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        return value < 0x20 || (0x7F...0x9F).contains(value) || value == 0x2028 || value == 0x2029
    }

    /// A byte that starts something that may need escaping: a C0 control, DEL, a backslash, or
    /// the lead byte of C1 (`C2`) or of U+2028/U+2029 (`E2`).
    private static func mayNeedEscaping(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\\") || byte == 0xC2 || byte == 0xE2
    }

    /// Whether a backslash before `next` must be doubled to stay a backslash when read back.
    private static func continuesEscape(_ next: Unicode.Scalar) -> Bool {
        switch next {
        case "\\", "n", "r", "t", "x", "u": true
        default: isEscaped(next)
        }
    }

    private static func escape(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        default:
            let value = scalar.value
            if value > 0xFF { return "\\u{" + hex(value, digits: 4) + "}" }
            return "\\x" + hex(value, digits: 2)
        }
    }

    private static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}
