import PeerProtocol
import Testing

// MARK: - Helpers

private func parse(_ text: String) -> Envelope? {
    EnvelopeParser.parse(Array(text.utf8))
}

/// The payload bytes of `text` as a string, or nil when it does not parse or has no payload.
private func payloadText(_ text: String) -> String? {
    let bytes = Array(text.utf8)
    guard let range = EnvelopeParser.parse(bytes)?.payload else { return nil }
    return String(decoding: bytes[range], as: UTF8.self)
}

/// Parses `input` and re-emits it the way the broker relays it: server-chosen `src`.
private func relay(_ input: [UInt8], src: String) -> [UInt8]? {
    guard let envelope = EnvelopeParser.parse(input), let type = envelope.type else { return nil }
    return input.withUnsafeBytes { raw in
        EnvelopeWriter.encode(
            type: type.wireName, src: src, dst: envelope.dst,
            payload: envelope.payload.map { UnsafeRawBufferPointer(rebasing: raw[$0]) })
    }
}

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// Deterministic PRNG (SplitMix64) so the randomized tests are reproducible.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - PROTOCOL.md §5 examples

@Suite struct EnvelopeParserExamples {
    @Test func openAndServerFrames() throws {
        #expect(parse(#"{"type":"OPEN"}"#) == Envelope(type: .open))
        let error = try #require(parse(#"{"type":"ERROR","payload":{"msg":"Invalid key provided"}}"#))
        #expect(error.type == .error && error.dst == nil)
        #expect(payloadText(#"{"type":"ERROR","payload":{"msg":"Invalid key provided"}}"#) == #"{"msg":"Invalid key provided"}"#)
        #expect(parse(#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#)?.type == .idTaken)
        #expect(parse(#"{"type":"EXPIRE","src":"bob","dst":"alice"}"#) == Envelope(type: .expire, dst: "alice"))
        #expect(parse(#"{"type":"LEAVE","src":"bob","dst":"alice"}"#) == Envelope(type: .leave, dst: "alice"))
        #expect(parse(#"{"type":"HEARTBEAT"}"#) == Envelope(type: .heartbeat))
    }

    @Test func offerAndCandidate() throws {
        let offerPayload =
            #"{"sdp":{"type":"offer","sdp":"v=0\r\n..."},"type":"data","connectionId":"dc_k2j3h4","label":"dc_k2j3h4","reliable":false,"serialization":"binary"}"#
        let offer = #"{"type":"OFFER","src":"alice","dst":"bob","payload":"# + offerPayload + "}"
        let parsed = try #require(parse(offer))
        #expect(parsed.type == .offer)
        #expect(parsed.dst == "bob")
        #expect(payloadText(offer) == offerPayload)
        #expect(text(try #require(relay(Array(offer.utf8), src: "alice"))) == offer)

        let candidatePayload =
            #"{"candidate":{"candidate":"candidate:1 1 udp ...","sdpMid":"0","sdpMLineIndex":0},"type":"data","connectionId":"dc_k2j3h4"}"#
        let candidate = #"{"type":"CANDIDATE","src":"bob","dst":"alice","payload":"# + candidatePayload + "}"
        #expect(parse(candidate)?.type == .candidate)
        #expect(parse(candidate)?.dst == "alice")
        #expect(payloadText(candidate) == candidatePayload)
        #expect(text(try #require(relay(Array(candidate.utf8), src: "bob"))) == candidate)
    }

    @Test func messageTypeWireNames() {
        let all: [MessageType] = [.open, .error, .idTaken, .invalidKey, .heartbeat, .offer, .answer, .candidate, .leave, .expire]
        let names = ["OPEN", "ERROR", "ID-TAKEN", "INVALID-KEY", "HEARTBEAT", "OFFER", "ANSWER", "CANDIDATE", "LEAVE", "EXPIRE"]
        for (type, name) in zip(all, names) {
            #expect(type.wireName == name)
            #expect(MessageType(wireName: name) == type)
        }
        #expect(MessageType(wireName: "offer") == .unknown("offer"))  // case-sensitive
        #expect(MessageType(wireName: "HTTP-ERROR").wireName == "HTTP-ERROR")
        #expect(parse(#"{"type":"FOO"}"#)?.type == .unknown("FOO"))
        #expect(parse(#"{"type":""}"#)?.type == .unknown(""))
    }
}

// MARK: - Envelope semantics

@Suite struct EnvelopeSemantics {
    @Test func payloadBytesAreExactIncludingOddWhitespaceAndUnicode() throws {
        let payload = "{ \"a\" :\t[1 , -2.5e+3,\r\n{\"é😀\":\"\\u00e9\\ud83d\\ude00 中\\n\"} ] ,\"b\":null }"
        let doc = " \r\n\t{ \"type\" :\t\"OFFER\" ,\n\"payload\"\r\n:  " + payload + "  , \"dst\" : \"b\"\n}\t "
        #expect(payloadText(doc) == payload)
        let out = try #require(relay(Array(doc.utf8), src: "a"))
        #expect(text(out) == #"{"type":"OFFER","src":"a","dst":"b","payload":"# + payload + "}")
        #expect(payloadText(text(out)) == payload)
    }

    @Test func payloadOfEveryKind() {
        for value in ["null", "true", "false", "0", "-1.5E-7", #""s""#, "[]", "{}", #"[{"a":[null]}]"#] {
            #expect(payloadText(#"{"payload":"# + value + "}") == value)
            #expect(payloadText(#"{"payload":  "# + value + "  }") == value)
        }
        #expect(parse(#"{"type":"OPEN"}"#)?.payload == nil)
        #expect(parse(#"{"payload":null}"#)?.payload == 11..<15)
    }

    @Test func srcCannotBeSpoofedAndExtraFieldsAreDropped() throws {
        let input = #"{"src":"Z","type":"ANSWER","extra":{"x":[1,2]},"dst":"bob","payload":{"k":1},"src":"Y","z":null}"#
        let out = try #require(relay(Array(input.utf8), src: "alice"))
        #expect(text(out) == #"{"type":"ANSWER","src":"alice","dst":"bob","payload":{"k":1}}"#)
        #expect(parse(input) == Envelope(type: .answer, dst: "bob", payload: 69..<76))
    }

    @Test func duplicateKeysLastOneWins() {
        #expect(parse(#"{"type":"OFFER","type":"ANSWER"}"#)?.type == .answer)
        #expect(parse(#"{"type":"OFFER","type":1}"#)?.type == nil)
        #expect(parse(#"{"type":1,"type":"LEAVE"}"#)?.type == .leave)
        #expect(parse(#"{"dst":"a","dst":"b"}"#)?.dst == "b")
        #expect(parse(#"{"dst":"a","dst":null}"#)?.dst == nil)
        #expect(payloadText(#"{"payload":1,"payload":[2]}"#) == "[2]")
    }

    @Test func keysAreComparedDecoded() {
        let doc = #"{"\u0074ype":"OFFER","d\u0073t":"x","p\u0061yload":[1],"\u0073rc":"z"}"#
        #expect(parse(doc)?.type == .offer)
        #expect(parse(doc)?.dst == "x")
        #expect(payloadText(doc) == "[1]")
        #expect(parse(#"{"Type":"OFFER","typ":"A","types":"B","type ":"C"}"#)?.type == nil)
        #expect(parse(#"{"t\u0079pe\u0000":"OFFER"}"#)?.type == nil)
        #expect(parse(#"{"payloads":1,"dstx":"a"}"#) == Envelope())
        #expect(parse(#"{"\u0064\u0073\u0074":"y"}"#)?.dst == "y")
    }

    @Test func valuesAreDecoded() {
        #expect(parse(#"{"dst":"a\"b\\c\/d\b\f\n\r\t\u00e9\u4E2D\ud83d\ude00"}"#)?.dst == "a\"b\\c/d\u{8}\u{C}\n\r\té中😀")
        #expect(parse(#"{"dst":"é😀中"}"#)?.dst == "é😀中")
        #expect(parse(#"{"type":"OFF\u0045R"}"#)?.type == .offer)
        #expect(parse(#"{"dst":"\u0000"}"#)?.dst == "\u{0}")
    }

    /// JSON.parse accepts lone surrogate escapes, so the parser does too; a Swift String cannot
    /// hold them, so each becomes U+FFFD when decoded.
    @Test func loneSurrogateEscapesAreAcceptedLikeJSONParse() {
        #expect(parse(#"{"dst":"\ud800"}"#)?.dst == "\u{FFFD}")
        #expect(parse(#"{"dst":"\udc00x"}"#)?.dst == "\u{FFFD}x")
        #expect(parse(#"{"dst":"\ude00\ud83d"}"#)?.dst == "\u{FFFD}\u{FFFD}")
        #expect(parse(#"{"dst":"\ud83d\ud83d\ude00"}"#)?.dst == "\u{FFFD}😀")
        #expect(parse(#"{"dst":"\ud800\u0041"}"#)?.dst == "\u{FFFD}A")
        #expect(payloadText(#"{"payload":"\udfff"}"#) == #""\udfff""#)
    }

    @Test func dstVariants() {
        #expect(parse(#"{"type":"OFFER"}"#)?.dst == nil)
        #expect(parse(#"{"dst":null}"#)?.dst == nil)
        #expect(parse(#"{"dst":""}"#)?.dst == "")
        #expect(parse(#"{"dst":5}"#)?.dst == nil)
        #expect(parse(#"{"dst":["a"]}"#)?.dst == nil)
        #expect(parse(#"{"dst":{"a":"b"}}"#)?.dst == nil)
        #expect(parse(#"{"dst":true}"#)?.dst == nil)
    }

    @Test func typeVariants() {
        #expect(parse("{}") == Envelope())
        #expect(parse(#"{"type":null}"#)?.type == nil)
        #expect(parse(#"{"type":["OFFER"]}"#)?.type == nil)
        #expect(parse(#"{"type":{"a":1}}"#)?.type == nil)
    }
}

// MARK: - Validation

@Suite struct EnvelopeValidation {
    static let invalidTexts: [String] = [
        // not an object / incomplete
        "", " ", "\n", "{", "}", "[]", #""str""#, "1", "null", "true", "[{}]",
        // members
        #"{"a"}"#, #"{"a":}"#, #"{"a" 1}"#, "{a:1}", "{'a':1}", #"{"a":1,}"#, "{,}", #"{,"a":1}"#,
        #"{"a":1 "b":2}"#, #"{"a":1}}"#, #"{"a"::1}"#, #"{1:1}"#, #"{null:1}"#,
        // arrays
        #"{"a":[1,]}"#, #"{"a":[,1]}"#, #"{"a":[1 2]}"#, #"{"a":[}"#, #"{"a":]}"#, #"{"a":[1}"#, #"{"a":{]}"#,
        #"{"a":{"b"}}"#, #"{"a":{"b":1,}}"#, #"{"a":[1]]}"#,
        // numbers
        #"{"a":01}"#, #"{"a":-01}"#, #"{"a":00}"#, #"{"a":1.}"#, #"{"a":.5}"#, #"{"a":+1}"#, #"{"a":1e}"#,
        #"{"a":1e+}"#, #"{"a":1E-}"#, #"{"a":-}"#, #"{"a":0x10}"#, #"{"a":1.5e}"#, #"{"a":1.e5}"#, #"{"a":NaN}"#,
        #"{"a":Infinity}"#, #"{"a":-Infinity}"#, #"{"a":- 1}"#, #"{"a":1e5.5}"#, #"{"a":--1}"#, #"{"payload":01}"#,
        // literals
        #"{"a":tru}"#, #"{"a":True}"#, #"{"a":nul}"#, #"{"a":fals}"#, #"{"a":falsey}"#, #"{"a":nulll}"#,
        #"{"a":undefined}"#, #"{"type":tru}"#, #"{"dst":nul}"#, #"{"payload":t}"#,
        // strings
        #"{"a":"abc}"#, #"{"a":"abc\"}"#, #"{"a":"\x"}"#, #"{"a":"\u12"}"#, #"{"a":"\u12G4"}"#, #"{"a":"\U0041"}"#,
        #"{"a":"\'"}"#, #"{"a":'x'}"#, #"{"a":"\"#, #"{"a\":1}"#, #"{"dst":"x\q"}"#, #"{"type":"\u004"}"#,
        "{\"a\":\"\u{01}\"}", "{\"a\":\"\t\"}", "{\"a\":\"\n\"}", "{\"a\":\"\u{1F}\"}", "{\"a\u{0}\":1}",
        // trailing garbage, whitespace that JSON does not allow, comments
        #"{"a":1} x"#, "{}{}", "{} {}", "{}\u{0}", "\u{FEFF}{}", "{\u{0B}}", "{\u{0C}}", "{\u{A0}}", "{}\u{A0}",
        "// c\n{}", #"{"a":1 /*c*/}"#, "{}]",
    ]

    static let invalidUTF8: [[UInt8]] = [
        [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xE0, 0x9F, 0xBF], [0xED, 0xA0, 0x80], [0xED, 0xBF, 0xBF],
        [0xF0, 0x80, 0x80, 0x80], [0xF0, 0x8F, 0xBF, 0xBF], [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80],
        [0xFF], [0xFE], [0x80], [0xBF], [0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0xC3, 0x28], [0xE2, 0x28, 0xA1],
        [0xF0, 0x9F, 0x28, 0x80],
    ]

    @Test func invalidDocumentsAreRejected() {
        #expect(Self.invalidTexts.count >= 40)
        for doc in Self.invalidTexts {
            #expect(parse(doc) == nil, "accepted invalid \(doc.debugDescription)")
        }
        #expect(EnvelopeParser.parse(UnsafeRawBufferPointer(start: nil, count: 0)) == nil)
    }

    @Test func invalidUTF8IsRejected() {
        for bad in Self.invalidUTF8 {
            let inString = Array(#"{"dst":"a"#.utf8) + bad + Array(#"b"}"#.utf8)
            #expect(EnvelopeParser.parse(inString) == nil, "accepted \(bad) in a string")
            let inPayload = Array(#"{"payload":{"k":"x"#.utf8) + bad + Array(#""}}"#.utf8)
            #expect(EnvelopeParser.parse(inPayload) == nil, "accepted \(bad) in a payload")
            let inKey = Array(#"{""#.utf8) + bad + Array(#"":1}"#.utf8)
            #expect(EnvelopeParser.parse(inKey) == nil, "accepted \(bad) in a key")
            #expect(EnvelopeParser.parse(Array("{}".utf8) + bad) == nil, "accepted \(bad) after the document")
        }
    }

    /// The string scanner skips 8 bytes at a time; put each special byte at every offset.
    @Test func specialBytesAtEveryOffsetInLongStrings() throws {
        let prefix = Array(#"{"dst":""#.utf8)
        let suffix = Array(#""}"#.utf8)
        for length in [1, 7, 8, 9, 15, 16, 17, 24] {
            for k in 0..<length {
                var body = [UInt8](repeating: 0x61, count: length)
                body[k] = 0x01
                #expect(EnvelopeParser.parse(prefix + body + suffix) == nil, "control byte at \(k) of \(length)")
                body[k] = 0x7F
                #expect(EnvelopeParser.parse(prefix + body + suffix)?.dst?.utf8.count == length)
                body[k] = 0x22  // an unescaped quote ends the string early
                #expect(EnvelopeParser.parse(prefix + body + suffix) == nil, "quote at \(k) of \(length)")
                body[k] = 0x5C  // a backslash escapes the next byte ("a" is not an escape; the closing quote is)
                #expect(EnvelopeParser.parse(prefix + body + suffix) == nil, "backslash at \(k) of \(length)")
                body[k] = 0xFF
                #expect(EnvelopeParser.parse(prefix + body + suffix) == nil, "0xFF at \(k) of \(length)")
                body.replaceSubrange(k...k, with: Array("é".utf8))
                let dst = try #require(EnvelopeParser.parse(prefix + body + suffix)?.dst)
                #expect(dst == String(repeating: "a", count: k) + "é" + String(repeating: "a", count: length - k - 1))
                body.replaceSubrange(k...(k + 1), with: Array(#"\""#.utf8))
                #expect(EnvelopeParser.parse(prefix + body + suffix)?.dst?.utf8.count == length)
            }
        }
    }

    @Test func validEdgeCasesAreAccepted() {
        let valid: [String] = [
            "{}", " {} ", "\t\r\n{\t\r\n}\t\r\n", #"{"":""}"#, #"{"a":0}"#, #"{"a":-0}"#, #"{"a":0.0}"#, #"{"a":0e0}"#,
            #"{"a":0E+1}"#, #"{"a":1e-5}"#, #"{"a":-1.25E+30}"#, #"{"a":10}"#, #"{"a":123456789012345678901234567890}"#,
            #"{"a":[]}"#, #"{"a":{}}"#, #"{"a":[[]]}"#, #"{"a":[{}]}"#, #"{"a":[true,false,null]}"#,
            #"{"a" : [ 1 , { "b" : null } ] }"#, #"{"a":"\/\b\f\n\r\t\"\\\u00e9\uD83D\uDE00"}"#, #"{"a":"\u0000\u001F"}"#,
            "{\"a\":\"\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}\"}", "{\"é\":\"😀\"}",
            #"{"a":1,"a":2}"#, #"{"a":"}","b":"{"}"#, #"{"a":"\\"}"#, #"{"a":[1,[2,[3,{"b":[4]}]]]}"#,
        ]
        for doc in valid {
            #expect(parse(doc) != nil, "rejected valid \(doc.debugDescription)")
        }
    }

    @Test func nestingIsBoundedWithoutRecursion() {
        let maxDepth = EnvelopeParser.maxDepth
        #expect(maxDepth == 64)
        func nested(_ levels: Int) -> String {
            #"{"payload":"# + String(repeating: "[", count: levels) + String(repeating: "]", count: levels) + "}"
        }
        #expect(parse(nested(maxDepth - 1)) != nil)  // top-level object + 63 arrays = 64
        #expect(parse(nested(maxDepth)) == nil)
        let objects = String(repeating: #"{"a":"#, count: maxDepth - 1) + "{}" + String(repeating: "}", count: maxDepth - 1)
        #expect(parse(objects) != nil)
        let tooDeepObjects = String(repeating: #"{"a":"#, count: maxDepth) + "{}" + String(repeating: "}", count: maxDepth)
        #expect(parse(tooDeepObjects) == nil)
        // Alternating objects and arrays: 1 + 62 + 1 = 64 levels, then 65.
        let mixed = String(repeating: #"{"a":["#, count: 31) + "1" + String(repeating: "]}", count: 31)
        #expect(parse(#"{"payload":["# + mixed + "]}") != nil)
        #expect(parse(#"{"payload":[["# + mixed + "]]}") == nil)

        let deep = 10_000
        #expect(parse(String(repeating: "[", count: deep)) == nil)
        #expect(parse(#"{"payload":"# + String(repeating: "[", count: deep)) == nil)
        #expect(parse(nested(deep)) == nil)
        #expect(parse(String(repeating: #"{"a":"#, count: deep) + "1" + String(repeating: "}", count: deep)) == nil)
    }
}

// MARK: - Writer

@Suite struct EnvelopeWriterTests {
    @Test func fieldOrderAndOmission() {
        #expect(text(EnvelopeWriter.encode(type: "OPEN", src: nil, dst: nil, payload: nil)) == #"{"type":"OPEN"}"#)
        #expect(text(EnvelopeWriter.encode(type: "LEAVE", src: "bob", dst: "alice", payload: nil)) == #"{"type":"LEAVE","src":"bob","dst":"alice"}"#)
        #expect(text(EnvelopeWriter.encode(type: "X", src: nil, dst: "d", payload: nil)) == #"{"type":"X","dst":"d"}"#)
        let payload = Array(#"{"x" : [1, 2]}"#.utf8)
        let out = payload.withUnsafeBytes { EnvelopeWriter.encode(type: "OFFER", src: "a", dst: "b", payload: $0) }
        #expect(text(out) == #"{"type":"OFFER","src":"a","dst":"b","payload":{"x" : [1, 2]}}"#)
        let empty = [UInt8]().withUnsafeBytes { EnvelopeWriter.encode(type: "T", src: nil, dst: nil, payload: $0) }
        #expect(text(empty) == #"{"type":"T"}"#)
    }

    @Test func writeAppends() {
        var out = Array("prefix".utf8)
        EnvelopeWriter.write(type: "HEARTBEAT", src: nil, dst: nil, payload: nil, into: &out)
        #expect(text(out) == #"prefix{"type":"HEARTBEAT"}"#)
    }

    @Test func stringsAreEscaped() throws {
        let tricky = "a\"b\\c/d\n\t\r\u{8}\u{C}\u{0}\u{1}\u{1F}\u{7F}é😀中"
        let out = EnvelopeWriter.encode(type: "T\"", src: tricky, dst: "", payload: nil)
        #expect(text(out) == #"{"type":"T\"","src":"a\"b\\c/d\n\t\r\b\f\u0000\u0001\u001f"# + "\u{7F}é😀中\",\"dst\":\"\"}")
        let parsed = try #require(EnvelopeParser.parse(out))
        #expect(parsed.type == .unknown("T\""))
        #expect(parsed.dst == "")
        let back = try #require(EnvelopeParser.parse(EnvelopeWriter.encode(type: "OFFER", src: nil, dst: tricky, payload: nil)))
        #expect(back.dst == tricky)
    }

    @Test func serverFrames() {
        #expect(text(EnvelopeWriter.idTaken()) == #"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#)
        #expect(text(EnvelopeWriter.open()) == #"{"type":"OPEN"}"#)
        #expect(text(EnvelopeWriter.error("Invalid key provided")) == #"{"type":"ERROR","payload":{"msg":"Invalid key provided"}}"#)
        #expect(text(EnvelopeWriter.error(#"say "hi"\"#)) == #"{"type":"ERROR","payload":{"msg":"say \"hi\"\\"}}"#)
        #expect(payloadText(text(EnvelopeWriter.error("x"))) == #"{"msg":"x"}"#)
        #expect(parse(text(EnvelopeWriter.idTaken()))?.type == .idTaken)
    }
}

// MARK: - Randomized (seeded, bounded)

/// Generates random valid documents and records what the parser should report for them.
private struct DocumentGenerator {
    var rng: SplitMix64

    struct Document {
        var text: String
        var type: MessageType?
        var dst: String?
        var payload: String?
    }

    /// (JSON source, decoded value) pieces for strings.
    static let pieces: [(json: String, decoded: String)] = [
        ("a", "a"), ("Z9", "Z9"), (" ", " "), (#"\n"#, "\n"), (#"\""#, "\""), (#"\\"#, "\\"), (#"\/"#, "/"),
        (#"\b"#, "\u{8}"), (#"\f"#, "\u{C}"), (#"\r"#, "\r"), (#"\t"#, "\t"), (#"\u00e9"#, "é"), (#"\u00E9"#, "é"),
        ("é", "é"), ("中", "中"), ("😀", "😀"), (#"\ud83d\ude00"#, "😀"), (#"\uD83D\uDE00"#, "😀"), (#"\u0000"#, "\u{0}"),
        (#"\ud800"#, "\u{FFFD}"), ("/", "/"), ("\u{7F}", "\u{7F}"), ("\u{10FFFF}", "\u{10FFFF}"), ("{", "{"), ("}", "}"),
        (",", ","), (":", ":"), ("[", "["),
    ]
    static let wireNames = ["OPEN", "ERROR", "ID-TAKEN", "HEARTBEAT", "OFFER", "ANSWER", "CANDIDATE", "LEAVE", "EXPIRE", "X"]

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func chance(_ percent: Int) -> Bool { int(0...99) < percent }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0...items.count - 1)] }

    mutating func whitespace() -> String {
        pick(["", "", "", "", " ", "\n", "\t", "\r\n", " \t ", "\r"])
    }

    mutating func string() -> (json: String, decoded: String) {
        var json = "", decoded = ""
        for _ in 0..<int(0...8) {
            let piece = pick(Self.pieces)
            json += piece.json
            decoded += piece.decoded
        }
        return (json, decoded)
    }

    mutating func digits(_ range: ClosedRange<Int>) -> String {
        String((0..<int(range)).map { _ in Character(String(int(0...9))) })
    }

    mutating func number() -> String {
        var n = chance(30) ? "-" : ""
        n += chance(25) ? "0" : String(int(1...9)) + digits(0...12)
        if chance(30) { n += "." + String(int(0...9)) + digits(0...5) }
        if chance(25) { n += pick(["e", "E"]) + pick(["", "+", "-"]) + String(int(0...9)) + digits(0...3) }
        return n
    }

    mutating func value(depth: Int) -> String {
        switch int(0...(depth >= 6 ? 5 : 8)) {
        case 0, 1: return "\"" + string().json + "\""
        case 2: return number()
        case 3: return "true"
        case 4: return "false"
        case 5: return "null"
        case 6, 7:
            let items = (0..<int(0...4)).map { _ in whitespace() + value(depth: depth + 1) + whitespace() }
            return "[" + (items.isEmpty ? whitespace() : items.joined(separator: ",")) + "]"
        default:
            let members = (0..<int(0...4)).map { _ in
                whitespace() + "\"" + string().json + "\"" + whitespace() + ":" + whitespace() + value(depth: depth + 1)
                    + whitespace()
            }
            return "{" + (members.isEmpty ? whitespace() : members.joined(separator: ",")) + "}"
        }
    }

    mutating func nonStringValue() -> String {
        while true {
            let v = value(depth: 2)
            if !v.hasPrefix("\"") { return v }
        }
    }

    mutating func document() -> Document {
        var doc = Document(text: "")
        var members: [String] = []
        for _ in 0..<int(0...7) {
            let key: String, value: String
            switch int(0...4) {
            case 0:
                key = pick(["type", "type", #"\u0074ype"#, #"typ\u0065"#])
                if chance(85) {
                    let s: (json: String, decoded: String)
                    if chance(70) {
                        let name = pick(Self.wireNames)
                        s = (name, name)
                    } else {
                        s = string()
                    }
                    value = "\"" + s.json + "\""
                    doc.type = MessageType(wireName: s.decoded)
                } else {
                    value = nonStringValue()
                    doc.type = nil
                }
            case 1:
                key = pick(["dst", "dst", #"d\u0073t"#])
                if chance(80) {
                    let s = string()
                    value = "\"" + s.json + "\""
                    doc.dst = s.decoded
                } else {
                    value = nonStringValue()
                    doc.dst = nil
                }
            case 2:
                key = pick(["payload", "payload", #"\u0070ayload"#])
                value = self.value(depth: 1)
                doc.payload = value
            case 3:
                key = "src"
                value = "\"" + string().json + "\""
            default:
                key = pick(["extra", "typ", "types", "Type", "", "DST", "pay\\u006Coads", string().json])
                value = self.value(depth: 1)
            }
            members.append(whitespace() + "\"" + key + "\"" + whitespace() + ":" + whitespace() + value + whitespace())
        }
        doc.text = whitespace() + "{" + (members.isEmpty ? whitespace() : members.joined(separator: ",")) + "}" + whitespace()
        return doc
    }
}

@Suite struct EnvelopeRandomized {
    @Test func generatedDocumentsParseAndRoundTrip() throws {
        var generator = DocumentGenerator(rng: SplitMix64(state: 0x5EED_0001))
        for n in 0..<2_000 {
            let doc = generator.document()
            let bytes = Array(doc.text.utf8)
            guard let envelope = EnvelopeParser.parse(bytes) else {
                Issue.record("document \(n) rejected: \(doc.text.debugDescription)")
                return
            }
            let payload = envelope.payload.map { Array(bytes[$0]) }
            guard envelope.type == doc.type, envelope.dst == doc.dst, payload == doc.payload.map({ Array($0.utf8) }) else {
                Issue.record("document \(n) misparsed: \(doc.text.debugDescription) → \(envelope)")
                return
            }
            let type = envelope.type?.wireName ?? "X"
            let out = bytes.withUnsafeBytes { raw in
                EnvelopeWriter.encode(
                    type: type, src: "me", dst: envelope.dst,
                    payload: envelope.payload.map { UnsafeRawBufferPointer(rebasing: raw[$0]) })
            }
            guard let again = EnvelopeParser.parse(out), again.type == MessageType(wireName: type),
                again.dst == envelope.dst, again.payload.map({ Array(out[$0]) }) == payload
            else {
                Issue.record("document \(n) did not round-trip: \(doc.text.debugDescription) → \(text(out).debugDescription)")
                return
            }
        }
    }

    @Test func mutatedAndRandomBytesNeverCrash() {
        var generator = DocumentGenerator(rng: SplitMix64(state: 0x5EED_0002))
        let alphabet = Array(#"{}[]",:\\ 0123456789-+.eEtrufalsnu"#.utf8) + [0x09, 0x0A, 0x0D, 0x00, 0xC3, 0xA9, 0xED, 0xF0, 0x9F, 0xFF]
        func check(_ bytes: [UInt8]) -> Bool {
            guard let envelope = EnvelopeParser.parse(bytes) else { return true }
            guard let payload = envelope.payload else { return true }
            return payload.lowerBound >= 0 && payload.upperBound <= bytes.count && !payload.isEmpty
        }
        var accepted = 0
        for _ in 0..<2_000 {
            let original = Array(generator.document().text.utf8)
            // Any cut before the closing brace leaves an incomplete document.
            let closing = original.lastIndex(of: 0x7D)!
            let cut = generator.int(0...closing)
            #expect(EnvelopeParser.parse(Array(original[..<cut])) == nil)
            for _ in 0..<5 {
                var bytes = original
                for _ in 0..<generator.int(1...3) {
                    let at = generator.int(0...bytes.count)
                    let byte = generator.chance(80) ? generator.pick(alphabet) : UInt8(generator.int(0...255))
                    switch generator.int(0...2) {
                    case 0: bytes.insert(byte, at: at)
                    case 1: if at < bytes.count { bytes.remove(at: at) }
                    default: if at < bytes.count { bytes[at] = byte }
                    }
                }
                if EnvelopeParser.parse(bytes) != nil { accepted += 1 }
                #expect(check(bytes))
            }
        }
        for _ in 0..<20_000 {
            var bytes = (0..<generator.int(0...48)).map { _ in
                generator.chance(90) ? generator.pick(alphabet) : UInt8(generator.int(0...255))
            }
            if generator.chance(70) { bytes.insert(0x7B, at: 0) }
            #expect(check(bytes))
        }
        #expect(accepted > 0)  // some mutations (e.g. inside strings) stay valid
    }
}
