import PeerProtocol
import Testing

/// A transport that records what the engine asked of it; `failing` connections refuse frames.
final class RecordingTransport: PeerTransport {
    var frames: [ConnectionID: [String]] = [:]
    var closed: [ConnectionID] = []
    var pinged: [ConnectionID] = []
    var events: [PeerEvent] = []
    var failing: Set<ConnectionID> = []
    /// Connections whose output still waits in the server (``hasPendingOutput(_:)``).
    var pending: Set<ConnectionID> = []

    func send(_ frame: UnsafeRawBufferPointer, to connection: ConnectionID) -> Bool {
        guard !failing.contains(connection) else { return false }
        frames[connection, default: []].append(String(decoding: frame, as: UTF8.self))
        return true
    }
    func close(_ connection: ConnectionID) { closed.append(connection) }
    func ping(_ connection: ConnectionID) { pinged.append(connection) }
    func peerEvent(_ event: PeerEvent) { events.append(event) }
    func hasPendingOutput(_ connection: ConnectionID) -> Bool { pending.contains(connection) }

    /// Takes the frames sent to `connection` so far.
    func drain(_ connection: ConnectionID) -> [String] {
        defer { frames[connection] = [] }
        return frames[connection] ?? []
    }
}

struct Harness {
    let clock = ManualClock(startingAt: 1_000)
    let transport = RecordingTransport()
    let engine: SignalingEngine<RecordingTransport, InMemoryRegistry>

    init(_ settings: ProtocolSettings = ProtocolSettings(), ids: [String] = []) {
        var pending = ids
        let generator: () -> String = ids.isEmpty ? { PeerIdentifier.uuid4() } : { pending.isEmpty ? "spare" : pending.removeFirst() }
        engine = SignalingEngine(
            settings: settings, registry: InMemoryRegistry(), transport: transport, clock: clock,
            idGenerator: generator)
    }

    @discardableResult
    func join(_ connection: UInt64, _ id: String, token: String = "t", key: String = "peerjs") -> RegistrationOutcome {
        engine.register(ConnectionID(connection), request: RegistrationRequest(id: id, token: token, key: key))
    }

    func send(_ connection: UInt64, _ text: String) {
        engine.receive(Array(text.utf8), from: ConnectionID(connection))
    }

    func frames(_ connection: UInt64) -> [String] { transport.drain(ConnectionID(connection)) }
}

let open = #"{"type":"OPEN"}"#

@Suite("Registration")
struct RegistrationTests {
    @Test("13/14 missing or empty id, token or key: ERROR then close")
    func missing() {
        let h = Harness()
        for (n, request) in [
            RegistrationRequest(id: nil, token: nil, key: nil),
            RegistrationRequest(id: "a", token: nil, key: "peerjs"),
            RegistrationRequest(id: "a", token: "", key: "peerjs"),
            RegistrationRequest(id: "", token: "t", key: "peerjs"),
        ].enumerated() {
            let c = ConnectionID(UInt64(n))
            #expect(h.engine.register(c, request: request) == .rejected(.missingParameters))
            #expect(h.transport.drain(c) == [#"{"type":"ERROR","payload":{"msg":"No id, token, or key supplied to websocket server"}}"#])
            #expect(h.transport.closed.contains(c))
        }
        #expect(h.engine.registry.count == 0)
    }

    @Test("15 wrong key: ERROR Invalid key provided, not registered")
    func wrongKey() {
        let h = Harness()
        #expect(h.join(1, "a", key: "other") == .rejected(.invalidKey))
        #expect(h.frames(1) == [#"{"type":"ERROR","payload":{"msg":"Invalid key provided"}}"#])
        #expect(h.engine.peers(key: "peerjs").isEmpty)
    }

    @Test("16 a new id gets exactly OPEN and is listed")
    func open() {
        let h = Harness()
        #expect(h.join(1, "a") == .registered)
        #expect(h.frames(1) == [PeerProtocolTests.open])
        #expect(h.engine.peers(key: "peerjs") == ["a"])
        #expect(h.transport.events == [.connected(id: "a", key: "peerjs", connection: ConnectionID(1), ip: "")])
    }

    @Test("19 same id, other token, the owner alive: ID-TAKEN and close; the owner keeps getting messages")
    func idTaken() {
        let h = Harness()
        h.join(1, "a")
        h.join(3, "c")
        for attempt in 0..<10 {
            let claimant = UInt64(100 + attempt)
            #expect(h.join(claimant, "a", token: "other") == .takingOver)
            #expect(h.transport.pinged.last == ConnectionID(1))
            h.clock.advance(by: 10)
            h.engine.tick()
            #expect(h.frames(claimant) == [])
            // The owner's pong (or any frame) answers the takeover's ping.
            if attempt % 2 == 0 { h.engine.touch(ConnectionID(1)) } else { h.send(1, #"{"type":"HEARTBEAT"}"#) }
            #expect(h.frames(claimant) == [#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#])
            #expect(h.transport.closed.contains(ConnectionID(claimant)))
        }
        #expect(h.engine.waitingForTakeover == 0)
        #expect(!h.transport.closed.contains(ConnectionID(1)))
        _ = h.frames(1)
        h.send(3, #"{"type":"OFFER","dst":"a","payload":1}"#)
        #expect(h.frames(1) == [#"{"type":"OFFER","src":"c","dst":"a","payload":1}"#])
    }

    @Test("20 same id and token: the new socket takes over, gets OPEN; the old one is closed")
    func takeOver() {
        let h = Harness()
        h.join(1, "a")
        h.join(3, "c")
        #expect(h.join(2, "a") == .replacedPrevious)
        #expect(h.frames(2) == [PeerProtocolTests.open])
        #expect(h.transport.closed == [ConnectionID(1)])
        _ = h.frames(1)
        h.send(3, #"{"type":"OFFER","dst":"a","payload":1}"#)
        #expect(h.frames(2).count == 1)
        #expect(h.frames(1).isEmpty)
        // The old socket's close must not unregister the id (E2).
        h.engine.connectionClosed(ConnectionID(1))
        #expect(h.engine.peers(key: "peerjs").sorted() == ["a", "c"])
    }

    @Test("21 after the owner closes, another token may take the id")
    func reuseAfterClose() {
        let h = Harness()
        h.join(1, "a")
        h.engine.connectionClosed(ConnectionID(1))
        #expect(h.join(2, "a", token: "new") == .registered)
    }

    @Test("22 concurrent_limit: the second id is refused until the first leaves")
    func limit() {
        let h = Harness(ProtocolSettings(concurrentLimit: 1))
        #expect(h.join(1, "a") == .registered)
        #expect(h.join(2, "b") == .rejected(.concurrentLimit))
        #expect(h.frames(2) == [#"{"type":"ERROR","payload":{"msg":"Server has reached its concurrent user limit"}}"#])
        h.engine.connectionClosed(ConnectionID(1))
        #expect(h.join(3, "c") == .registered)
    }

    @Test("18 E5 query strings are form-decoded")
    func queryDecoding() {
        let request = RegistrationRequest(query: "key=peerjs&id=a%20b&token=x+y&version=1.5.4&extra=1&id=ignored")
        #expect(request == RegistrationRequest(id: "a b", token: "x y", key: "peerjs", version: "1.5.4"))
        #expect(RegistrationRequest.formDecode("100%") == "100%")
        #expect(RegistrationRequest.formDecode("%zz%4") == "%zz%4")
        #expect(RegistrationRequest.formDecode("%E2%9C%93") == "✓")
        #expect(RegistrationRequest.formDecode("a%2") == "a%2")
        #expect(RegistrationRequest.formDecode("%41%") == "A%")
        #expect(RegistrationRequest(query: "&&id=é=x&token&key=%6B&") == RegistrationRequest(id: "é=x", token: "", key: "k"))
        #expect(RegistrationRequest(query: "id=%FF") == RegistrationRequest(id: "\u{FFFD}", token: nil, key: nil, notUTF8: .id))
    }
}

@Suite("Relay")
struct RelayTests {
    @Test("24–27 relay keeps payload bytes and order, sets src, drops extra fields")
    func relay() {
        let h = Harness()
        h.join(1, "A")
        h.join(2, "B")
        _ = h.frames(2)
        h.send(1, #"{"type":"OFFER","src":"Z","dst":"B","extra":true,"payload":{"sdp":{"type":"offer","sdp":"v=0\r\n"}, "n" : 1}}"#)
        h.send(1, #"{"type":"ANSWER","dst":"B","payload":[1,2]}"#)
        h.send(1, #"{"type":"CANDIDATE","dst":"B","payload":"c"}"#)
        #expect(h.frames(2) == [
            #"{"type":"OFFER","src":"A","dst":"B","payload":{"sdp":{"type":"offer","sdp":"v=0\r\n"}, "n" : 1}}"#,
            #"{"type":"ANSWER","src":"A","dst":"B","payload":[1,2]}"#,
            #"{"type":"CANDIDATE","src":"A","dst":"B","payload":"c"}"#,
        ])
    }

    @Test("28–30 HEARTBEAT, unknown types and non-JSON produce nothing")
    func ignored() {
        let h = Harness()
        h.join(1, "A")
        h.join(2, "B")
        _ = h.frames(1)
        _ = h.frames(2)
        for text in [#"{"type":"HEARTBEAT"}"#, #"{"type":"FOO","dst":"B"}"#, #"{"type":"OPEN","dst":"B"}"#, "not json", "[1]"] {
            h.send(1, text)
        }
        #expect(h.frames(1).isEmpty && h.frames(2).isEmpty && h.transport.closed.isEmpty)
    }

    @Test("32 LEAVE is relayed to a connected peer and dropped for an offline one")
    func leaveRelay() {
        let h = Harness(ProtocolSettings(expireTimeoutMs: 100))
        h.join(1, "A")
        h.join(2, "B")
        _ = h.frames(2)
        h.send(1, #"{"type":"LEAVE","dst":"B"}"#)
        #expect(h.frames(2) == [#"{"type":"LEAVE","src":"A","dst":"B"}"#])
        h.send(1, #"{"type":"LEAVE","dst":"C"}"#)
        h.send(1, #"{"type":"EXPIRE","dst":"C"}"#)
        #expect(h.engine.statistics.queuedMessages == 0)
    }

    @Test("33 LEAVE without dst unregisters the sender and closes it (E2)")
    func leaveSelf() {
        let h = Harness()
        h.join(1, "A")
        h.send(1, #"{"type":"LEAVE"}"#)
        #expect(h.engine.peers(key: "peerjs").isEmpty)
        #expect(h.transport.closed == [ConnectionID(1)])
        #expect(h.join(2, "A", token: "other") == .registered)
    }

    @Test("34 a relay that cannot be delivered drops B and tells A with LEAVE")
    func relayFailure() {
        let h = Harness()
        h.join(1, "A")
        h.join(2, "B")
        _ = h.frames(1)
        h.transport.failing = [ConnectionID(2)]
        h.send(1, #"{"type":"OFFER","dst":"B","payload":{}}"#)
        #expect(h.frames(1) == [#"{"type":"LEAVE","src":"B","dst":"A"}"#])
        #expect(h.engine.peers(key: "peerjs") == ["A"])
        #expect(h.transport.closed == [ConnectionID(2)])
    }

    @Test("40 E6 a message with missing, null or empty dst is not queued")
    func noDestination() {
        let h = Harness()
        h.join(1, "A")
        _ = h.frames(1)
        for text in [#"{"type":"OFFER","payload":1}"#, #"{"type":"OFFER","dst":null}"#, #"{"type":"OFFER","dst":""}"#] {
            h.send(1, text)
        }
        #expect(h.engine.statistics.queuedMessages == 0)
        #expect(h.frames(1).isEmpty)
    }
}

@Suite("Offline queue and expiry")
struct ExpiryTests {
    @Test("35/43 messages for an offline id arrive after OPEN, in order, without EXPIRE")
    func delivered() {
        let h = Harness()
        h.join(1, "A")
        _ = h.frames(1)
        h.send(1, #"{"type":"OFFER","dst":"C","payload":1}"#)
        h.send(1, #"{"type":"CANDIDATE","dst":"C","payload":2}"#)
        h.clock.advance(by: 4_000)
        h.engine.tick()
        h.join(3, "C")
        #expect(h.frames(3) == [
            PeerProtocolTests.open,
            #"{"type":"OFFER","src":"A","dst":"C","payload":1}"#,
            #"{"type":"CANDIDATE","src":"A","dst":"C","payload":2}"#,
        ])
        h.clock.advance(by: 5_000)
        h.engine.tick()
        #expect(h.frames(1).isEmpty)
    }

    @Test("36–38 EXPIRE once per sender, from the first message, not postponed")
    func expires() {
        let h = Harness()
        h.join(1, "A")
        h.join(4, "D")
        _ = h.frames(1)
        _ = h.frames(4)
        h.send(1, #"{"type":"OFFER","dst":"C","payload":1}"#)
        h.clock.advance(by: 3_000)
        h.send(1, #"{"type":"OFFER","dst":"C","payload":2}"#)
        h.send(4, #"{"type":"OFFER","dst":"C","payload":3}"#)
        h.clock.advance(by: 1_999)
        h.engine.tick()
        #expect(h.frames(1).isEmpty)
        h.clock.advance(by: 1)
        h.engine.tick()
        #expect(h.frames(1) == [#"{"type":"EXPIRE","src":"C","dst":"A"}"#])
        #expect(h.frames(4) == [#"{"type":"EXPIRE","src":"C","dst":"D"}"#])
        h.clock.advance(by: 10_000)
        h.engine.tick()
        #expect(h.frames(1).isEmpty)
        #expect(h.engine.statistics.queuedMessages == 0)
    }

    @Test("41 EXPIRE for a sender who has gone is dropped")
    func senderGone() {
        let h = Harness()
        h.join(1, "A")
        h.send(1, #"{"type":"OFFER","dst":"C","payload":1}"#)
        h.engine.connectionClosed(ConnectionID(1))
        h.clock.advance(by: 6_000)
        h.engine.tick()
        #expect(h.engine.statistics.queuedMessages == 0)
    }

    @Test("42 expire_timeout changes the timing")
    func configured() {
        let h = Harness(ProtocolSettings(expireTimeoutMs: 50))
        h.join(1, "A")
        h.send(1, #"{"type":"OFFER","dst":"C","payload":1}"#)
        h.clock.advance(by: 20)
        h.engine.tick()
        #expect(h.engine.statistics.queuedMessages == 1)
        h.clock.advance(by: 50)
        h.engine.tick()
        #expect(h.engine.statistics.queuedMessages == 0)
    }

    @Test("a full queue answers EXPIRE at once instead of losing the message silently")
    func full() {
        let h = Harness(ProtocolSettings(maxQueuedPerDestination: 2))
        h.join(1, "A")
        _ = h.frames(1)
        for n in 0..<3 { h.send(1, #"{"type":"OFFER","dst":"C","payload":\#(n)}"#) }
        #expect(h.frames(1) == [#"{"type":"EXPIRE","src":"C","dst":"A"}"#])
        #expect(h.engine.statistics.queuedMessages == 2)
    }
}

@Suite("Liveness")
struct LivenessTests {
    @Test("45–48 any frame keeps a peer; silent peers are pinged, then dropped at alive_timeout")
    func liveness() {
        let h = Harness(ProtocolSettings(aliveTimeoutMs: 900))
        h.join(1, "quiet")
        h.join(2, "talker")
        h.join(3, "offerer")
        h.join(4, "ponger")
        for _ in 0..<6 {
            h.clock.advance(by: 300)
            h.send(2, #"{"type":"HEARTBEAT"}"#)
            h.send(3, #"{"type":"OFFER","dst":"nobody","payload":1}"#)
            h.engine.touch(ConnectionID(4))
            h.engine.tick()
        }
        #expect(h.transport.pinged.contains(ConnectionID(1)))
        #expect(!h.transport.pinged.contains(ConnectionID(2)))
        #expect(Set(h.engine.peers(key: "peerjs")) == ["talker", "offerer", "ponger"])
        #expect(h.transport.closed == [ConnectionID(1)])
        #expect(h.transport.events.last == .disconnected(id: "quiet", key: "peerjs", connection: ConnectionID(1), ip: "", reason: .aliveTimeout))
    }

    @Test("48 a heartbeat moves the deadline")
    func heartbeatResets() {
        let h = Harness(ProtocolSettings(aliveTimeoutMs: 1_000))
        h.join(1, "a")
        h.clock.advance(by: 500)
        h.send(1, #"{"type":"HEARTBEAT"}"#)
        h.clock.advance(by: 700)
        h.engine.tick()
        #expect(h.engine.peers(key: "peerjs") == ["a"])
        h.clock.advance(by: 300)
        h.engine.tick()
        #expect(h.engine.peers(key: "peerjs").isEmpty)
    }
}

@Suite("HTTP side")
struct HTTPSideTests {
    @Test("2 ids are UUID v4")
    func uuid() {
        let id = PeerIdentifier.uuid4()
        #expect(id.count == 36)
        let chars = Array(id)
        #expect(chars[14] == "4")
        #expect("89ab".contains(chars[19]))
        #expect(id == id.lowercased())
        #expect(PeerIdentifier.uuid4() != id)
    }

    @Test("4 a configured id generator is used and skips ids that are connected")
    func generator() {
        let h = Harness(ids: ["taken", "free"])
        h.join(1, "taken")
        #expect(h.engine.newID(key: "peerjs") == "free")
    }

    @Test("6 discovery lists the realm's ids")
    func peers() {
        let h = Harness(ProtocolSettings(keys: ["peerjs", "room"]))
        h.join(1, "a")
        h.join(2, "b", key: "room")
        #expect(h.engine.peers(key: "peerjs") == ["a"])
        #expect(h.engine.peers(key: "room") == ["b"])
    }
}
