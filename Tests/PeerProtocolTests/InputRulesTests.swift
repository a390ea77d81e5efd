import PeerProtocol
import Testing

// The length and character rules for ids, tokens and keys (README, "Ids, tokens and keys"), and
// the matching rule for a relayed message's dst.

func errorFrame(_ text: String) -> String { #"{"type":"ERROR","payload":{"msg":"\#(text)"}}"# }

@Suite("Ids, tokens and keys")
struct InputRulesTests {
    /// Registers `request` on a fresh connection and returns the outcome, the frames and whether it was closed.
    private func attempt(_ h: Harness, _ connection: UInt64, _ request: RegistrationRequest)
        -> (RegistrationOutcome, [String], Bool)
    {
        let c = ConnectionID(connection)
        let outcome = h.engine.register(c, request: request)
        return (outcome, h.transport.drain(c), h.transport.closed.contains(c))
    }

    @Test("an id of 256 bytes registers; 257 bytes gets ERROR 'ID is invalid…', a close, and is not registered")
    func idLength() {
        let h = Harness()
        let ok = String(repeating: "a", count: 256)
        #expect(attempt(h, 1, RegistrationRequest(id: ok, token: "t", key: "peerjs")).0 == .registered)
        #expect(h.engine.peers(key: "peerjs") == [ok])
        // Multi-byte characters count in bytes: 128 × "é" (2 bytes each) is 256 bytes, one more is 258.
        let accents = String(repeating: "é", count: 128)
        #expect(attempt(h, 2, RegistrationRequest(id: accents, token: "t", key: "peerjs")).0 == .registered)

        let long = String(repeating: "a", count: 257)
        let (outcome, frames, closed) = attempt(h, 3, RegistrationRequest(id: long, token: "t", key: "peerjs"))
        #expect(outcome == .rejected(.malformedID))
        #expect(frames == [errorFrame(ProtocolText.malformedID)])
        #expect(closed)
        #expect(attempt(h, 4, RegistrationRequest(id: accents + "é", token: "t", key: "peerjs")).0 == .rejected(.malformedID))
        #expect(attempt(h, 5, RegistrationRequest(id: String(repeating: "x", count: 60_000), token: "t", key: "peerjs")).0
            == .rejected(.malformedID))
        #expect(Set(h.engine.peers(key: "peerjs")) == [ok, accents])
        #expect(h.transport.events.count == 2)
    }

    @Test("a token of 4096 bytes (room for a JWT) registers; 4097 bytes gets ERROR 'Token is invalid…'")
    func tokenLength() {
        let h = Harness()
        #expect(attempt(h, 1, RegistrationRequest(id: "a", token: String(repeating: "t", count: 4096), key: "peerjs")).0
            == .registered)
        let (outcome, frames, closed) = attempt(
            h, 2, RegistrationRequest(id: "b", token: String(repeating: "t", count: 4097), key: "peerjs"))
        #expect(outcome == .rejected(.malformedToken))
        #expect(frames == [errorFrame(ProtocolText.malformedToken)])
        #expect(closed)
        #expect(h.engine.peers(key: "peerjs") == ["a"])
    }

    @Test("a key of 257 bytes gets ERROR 'Key is invalid…' (before the key check); 256 bytes is an ordinary key")
    func keyLength() {
        let key256 = String(repeating: "k", count: 256)
        let h = Harness(ProtocolSettings(keys: ["peerjs", key256]))
        #expect(attempt(h, 1, RegistrationRequest(id: "a", token: "t", key: key256)).0 == .registered)
        let (outcome, frames, closed) = attempt(h, 2, RegistrationRequest(id: "a", token: "t", key: key256 + "k"))
        #expect(outcome == .rejected(.malformedKey))
        #expect(frames == [errorFrame(ProtocolText.malformedKey)])
        #expect(closed)
        // A well-formed key that is not served is still "Invalid key provided".
        #expect(attempt(h, 3, RegistrationRequest(id: "b", token: "t", key: "other")).0 == .rejected(.invalidKey))
    }

    @Test(
        "control characters (C0, DEL, C1) and U+2028/U+2029 are refused in id, token and key",
        arguments: ["\n", "\r", "\t", "\u{0}", "\u{1B}", "\u{7F}", "\u{80}", "\u{85}", "\u{9F}", "\u{2028}", "\u{2029}"]
    )
    func controlCharacters(_ bad: String) {
        let h = Harness()
        let text = "x" + bad + "y"
        #expect(attempt(h, 1, RegistrationRequest(id: text, token: "t", key: "peerjs")).0 == .rejected(.malformedID))
        #expect(attempt(h, 2, RegistrationRequest(id: "a", token: text, key: "peerjs")).0 == .rejected(.malformedToken))
        #expect(attempt(h, 3, RegistrationRequest(id: "a", token: "t", key: text)).0 == .rejected(.malformedKey))
        #expect(attempt(h, 4, RegistrationRequest(id: bad, token: "t", key: "peerjs")).0 == .rejected(.malformedID))
        #expect(h.engine.peers(key: "peerjs").isEmpty)
    }

    @Test("neighbours of the refused characters are fine: U+00A0, U+2027, U+202A, '~', emoji, and spaces")
    func neighbours() {
        let h = Harness()
        for (n, id) in ["a\u{A0}b", "a\u{2027}b", "a\u{202A}b", "a~b", "a😀b", "a\u{20AC}b", "\u{E2}\u{A8}", "\u{C2}"].enumerated() {
            #expect(attempt(h, UInt64(n), RegistrationRequest(id: id, token: "t", key: "peerjs")).0 == .registered, "\(id)")
        }
    }

    @Test("the query is checked after form-decoding: %0A, %7F, %C2%85 and %E2%80%A8 are refused; %FF (not UTF-8) too")
    func decodedQuery() {
        let h = Harness()
        for (n, query) in [
            "key=peerjs&token=t&id=x%0Ay", "key=peerjs&token=t&id=x%7F", "key=peerjs&token=t&id=x%C2%85",
            "key=peerjs&token=t&id=x%E2%80%A8", "key=peerjs&token=t&id=%FF", "key=peerjs&token=t&id=a%C2",
        ].enumerated() {
            #expect(attempt(h, UInt64(n), RegistrationRequest(query: Substring(query))).0 == .rejected(.malformedID), "\(query)")
        }
        #expect(attempt(h, 10, RegistrationRequest(query: "key=peerjs&id=a&token=%FFx")).0 == .rejected(.malformedToken))
        #expect(attempt(h, 11, RegistrationRequest(query: "key=%FF&id=a&token=t")).0 == .rejected(.malformedKey))
        // A literal U+FFFD sent as UTF-8 is a character like any other.
        #expect(attempt(h, 12, RegistrationRequest(query: "key=peerjs&id=%EF%BF%BD&token=t")).0 == .registered)
        #expect(h.engine.peers(key: "peerjs") == ["\u{FFFD}"])
    }

    @Test("a normal client id with spaces, dashes and underscores still registers (form-decoded)")
    func ordinaryIDs() {
        let h = Harness()
        #expect(attempt(h, 1, RegistrationRequest(query: "key=peerjs&id=alice%20smith&token=t")).0 == .registered)
        #expect(attempt(h, 2, RegistrationRequest(query: "key=peerjs&id=bob+jones_2-x&token=t&version=1.5.4")).0 == .registered)
        #expect(attempt(h, 3, RegistrationRequest(query: "key=peerjs&id=3f1c2b9a-6d0e-4c57-9b1a-2f1e0d9c8b7a&token=t")).0
            == .registered)
        #expect(Set(h.engine.peers(key: "peerjs")) == ["alice smith", "bob jones_2-x", "3f1c2b9a-6d0e-4c57-9b1a-2f1e0d9c8b7a"])
    }

    @Test("the order of checks: missing parameters first, then id, token, key rules, then the key")
    func order() {
        let h = Harness()
        let bad = "x\ny"
        #expect(attempt(h, 1, RegistrationRequest(id: bad, token: nil, key: "peerjs")).0 == .rejected(.missingParameters))
        #expect(attempt(h, 2, RegistrationRequest(id: bad, token: bad, key: bad)).0 == .rejected(.malformedID))
        #expect(attempt(h, 3, RegistrationRequest(id: "a", token: bad, key: bad)).0 == .rejected(.malformedToken))
        #expect(attempt(h, 4, RegistrationRequest(id: "a", token: "t", key: "other\n")).0 == .rejected(.malformedKey))
        #expect(RegistrationRequest(id: "a", token: "t", key: "k").violation == nil)
        #expect(RegistrationRequest(id: nil, token: nil, key: nil).violation == nil)
    }

    @Test("E6 a dst no id can have (over 256 bytes, control characters) is dropped, not queued")
    func invalidDestination() {
        let h = Harness()
        h.join(1, "A")
        _ = h.frames(1)
        let long = String(repeating: "d", count: 257)
        for text in [
            #"{"type":"OFFER","dst":"\#(long)","payload":1}"#, #"{"type":"OFFER","dst":"x\ny","payload":1}"#,
            #"{"type":"CANDIDATE","dst":"x\u2028y","payload":1}"#, #"{"type":"OFFER","dst":"x\u0000","payload":1}"#,
            #"{"type":"LEAVE","dst":"\#(long)"}"#,
        ] {
            h.send(1, text)
        }
        #expect(h.engine.statistics.queuedMessages == 0)
        #expect(h.frames(1).isEmpty)
        #expect(h.engine.peers(key: "peerjs") == ["A"], "a LEAVE with an unusable dst is not a LEAVE without dst")
        #expect(h.transport.closed.isEmpty)
        // A dst of exactly 256 bytes is an id someone could register: queued as before.
        h.send(1, #"{"type":"OFFER","dst":"\#(String(repeating: "d", count: 256))","payload":1}"#)
        #expect(h.engine.statistics.queuedMessages == 1)
    }
}
