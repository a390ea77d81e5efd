import IPC
import Testing

@Suite("LogText: one log record, one line")
struct LogTextTests {
    /// Reads an escaped text back (the scheme documented on `LogText`), to prove it is unambiguous.
    private func unescape(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        func hexValue(_ digits: ArraySlice<Unicode.Scalar>) -> Unicode.Scalar? {
            UInt32(String(String.UnicodeScalarView(digits)), radix: 16).flatMap(Unicode.Scalar.init)
        }
        while i < scalars.count {
            let c = scalars[i]
            guard c == "\\", i + 1 < scalars.count else {
                out.append(c)
                i += 1
                continue
            }
            switch scalars[i + 1] {
            case "\\": out.append("\\"); i += 2
            case "n": out.append("\n"); i += 2
            case "r": out.append("\r"); i += 2
            case "t": out.append("\t"); i += 2
            case "x" where i + 3 < scalars.count:
                out.append(hexValue(scalars[(i + 2)...(i + 3)])!)
                i += 4
            case "u" where i + 2 < scalars.count && scalars[i + 2] == "{":
                let close = scalars[(i + 3)...].firstIndex(of: "}")!
                out.append(hexValue(scalars[(i + 3)..<close])!)
                i = close + 1
            default:
                out.append(c)
                i += 1
            }
        }
        return String(out)
    }

    @Test("plain text, non-ASCII letters and lone backslashes are unchanged")
    func unchanged() {
        for text in ["", "Client connected: alice", "héllo ✓ 😀", #"C:\Temp"#, #"{"reason":"a \"b\""}"#, "a\u{A0}b\u{2027}c", "\\"] {
            #expect(LogText.escaped(text) == text)
        }
    }

    @Test("newline, CR and tab become \\n \\r \\t; other C0, DEL and C1 become \\xHH; U+2028/2029 become \\u{…}")
    func escapes() {
        #expect(LogText.escaped("a\nb") == #"a\nb"#)
        #expect(LogText.escaped("a\r\n\tb") == #"a\r\n\tb"#)
        #expect(LogText.escaped("\u{0}\u{1B}[31m\u{7F}") == #"\x00\x1B[31m\x7F"#)
        #expect(LogText.escaped("a\u{80}b\u{85}c\u{9F}") == #"a\x80b\x85c\x9F"#)
        #expect(LogText.escaped("a\u{2028}b\u{2029}") == #"a\u{2028}b\u{2029}"#)
    }

    @Test("a forged journal line stays inside the record")
    func forgery() {
        let forged = "x\n<0>peerjs[supervisor] critical: broker compromised"
        let escaped = LogText.escaped(forged)
        #expect(escaped == #"x\n<0>peerjs[supervisor] critical: broker compromised"#)
        #expect(!escaped.unicodeScalars.contains(where: LogText.isEscaped))
    }

    @Test("a backslash that could be read as part of an escape is doubled, so reading back is unambiguous")
    func backslashes() {
        #expect(LogText.escaped(#"a\nb"#) == #"a\\nb"#)  // a backslash and an n, not a newline
        #expect(LogText.escaped(#"\x41"#) == #"\\x41"#)
        #expect(LogText.escaped(#"\u{2028}"#) == #"\\u{2028}"#)
        #expect(LogText.escaped("\\\n") == #"\\\n"#)  // a backslash, then a newline
        #expect(LogText.escaped(#"\\"#) == #"\\\"#)  // two backslashes: the first is doubled
        #expect(LogText.escaped(#"C:\Temp\new"#) == #"C:\Temp\\new"#)
    }

    @Test("every input reads back as itself and holds no line break after escaping")
    func roundTrip() {
        let pieces = ["a", "\\", "n", "x", "u", "{", "}", "\n", "\r", "\t", "\u{0}", "\u{7F}", "\u{85}", "\u{2028}", "\u{2029}", "é", "1", "F"]
        var generator = SplitMix(seed: 42)
        for _ in 0..<2000 {
            let length = Int(generator.next() % 12)
            let text = (0..<length).map { _ in pieces[Int(generator.next() % UInt64(pieces.count))] }.joined()
            let escaped = LogText.escaped(text)
            #expect(!escaped.unicodeScalars.contains(where: LogText.isEscaped), "\(text.debugDescription)")
            #expect(unescape(escaped) == text, "\(text.debugDescription) → \(escaped.debugDescription)")
        }
    }
}

/// A small deterministic generator, so the round-trip test is the same on every run.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
