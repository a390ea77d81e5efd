import PeerProtocol
import Testing

/// A transport whose connections take a limited number of frames (then `send` fails, as the
/// broker's does for a connection past `--output_limit`).
final class BudgetTransport: PeerTransport {
    var frames: [ConnectionID: [String]] = [:]
    var budget: [ConnectionID: Int] = [:]
    var closed: [ConnectionID] = []
    var events: [PeerEvent] = []

    func send(_ frame: UnsafeRawBufferPointer, to connection: ConnectionID) -> Bool {
        if let left = budget[connection] {
            guard left > 0 else { return false }
            budget[connection] = left - 1
        }
        frames[connection, default: []].append(String(decoding: frame, as: UTF8.self))
        return true
    }
    func close(_ connection: ConnectionID) { closed.append(connection) }
    func ping(_ connection: ConnectionID) {}
    func peerEvent(_ event: PeerEvent) { events.append(event) }
}

@Suite("Offline queue flush past the output limit (issue 15)")
struct QueueFlushTests {
    @Test("a peer that cannot take its queue is dropped and every sender of the queue gets one EXPIRE")
    func undeliverableQueue() {
        let transport = BudgetTransport()
        let engine = SignalingEngine(
            settings: ProtocolSettings(), registry: InMemoryRegistry(), transport: transport,
            clock: ManualClock(startingAt: 1_000))
        let (a, d, c) = (ConnectionID(1), ConnectionID(2), ConnectionID(3))
        engine.register(a, request: RegistrationRequest(id: "A", token: "t", key: "peerjs"))
        engine.register(d, request: RegistrationRequest(id: "D", token: "t", key: "peerjs"))
        for (sender, payload) in [(a, 1), (d, 2), (a, 3), (a, 4)] {
            engine.receive(Array(#"{"type":"OFFER","dst":"C","payload":\#(payload)}"#.utf8), from: sender)
        }
        transport.frames = [:]
        transport.budget[c] = 2  // OPEN and the first message
        engine.register(c, request: RegistrationRequest(id: "C", token: "t", key: "peerjs"))

        #expect(transport.frames[c] == [#"{"type":"OPEN"}"#, #"{"type":"OFFER","src":"A","dst":"C","payload":1}"#])
        #expect(transport.closed == [c])
        #expect(engine.peers(key: "peerjs").sorted() == ["A", "D"])
        #expect(transport.frames[a] == [#"{"type":"EXPIRE","src":"C","dst":"A"}"#])
        #expect(transport.frames[d] == [#"{"type":"EXPIRE","src":"C","dst":"D"}"#])
        #expect(transport.events.last == .disconnected(id: "C", key: "peerjs", connection: c, ip: "", reason: .sendFailed))
        #expect(engine.statistics.queuedMessages == 0)
    }

    @Test("a queue that fits is delivered in full and nobody gets EXPIRE")
    func deliverableQueue() {
        let transport = BudgetTransport()
        let engine = SignalingEngine(
            settings: ProtocolSettings(), registry: InMemoryRegistry(), transport: transport,
            clock: ManualClock(startingAt: 1_000))
        let (a, c) = (ConnectionID(1), ConnectionID(3))
        engine.register(a, request: RegistrationRequest(id: "A", token: "t", key: "peerjs"))
        engine.receive(Array(#"{"type":"OFFER","dst":"C","payload":1}"#.utf8), from: a)
        transport.frames = [:]
        transport.budget[c] = 2
        engine.register(c, request: RegistrationRequest(id: "C", token: "t", key: "peerjs"))
        #expect(transport.frames[c]?.count == 2)
        #expect(transport.closed.isEmpty)
        #expect(transport.frames[a] == nil)
    }
}

/// Review of issue 15: offline queues are charged what they hold, not only their frames' bytes.
@Suite("Offline queue accounting (issue 15 review)")
struct QueueAccountingTests {
    func engine(_ settings: ProtocolSettings = ProtocolSettings()) -> (SignalingEngine<BudgetTransport, InMemoryRegistry>, BudgetTransport) {
        let transport = BudgetTransport()
        let engine = SignalingEngine(settings: settings, registry: InMemoryRegistry(), transport: transport,
                                     clock: ManualClock(startingAt: 1_000))
        engine.register(ConnectionID(1), request: RegistrationRequest(id: "A", token: "t", key: "peerjs"))
        transport.frames = [:]  // A's OPEN
        return (engine, transport)
    }

    @Test("many tiny messages to many offline ids are charged their bookkeeping too: the total limit holds far fewer of them than their bytes alone would allow")
    func tinyMessagesAreCharged() {
        let (engine, transport) = engine(ProtocolSettings(maxQueuedBytes: 100_000))
        // A large relayed message first: the engine's scratch buffer grows to its size.
        engine.register(ConnectionID(2), request: RegistrationRequest(id: "B", token: "t", key: "peerjs"))
        let big = String(repeating: "z", count: 60_000)
        engine.receive(Array(#"{"type":"OFFER","dst":"B","payload":"\#(big)"}"#.utf8), from: ConnectionID(1))
        transport.frames = [:]
        var queued = 0
        for index in 0..<2_000 {
            engine.receive(Array(#"{"type":"OFFER","dst":"d\#(index)","payload":1}"#.utf8), from: ConnectionID(1))
            if engine.statistics.queuedMessages > queued { queued = engine.statistics.queuedMessages }
        }
        // Each ~45-byte frame costs its sender's id, 64 bytes per message and 128 per destination
        // (~240 in all): 100,000 bytes hold ~400 of them, not the ~2,200 their frames alone would.
        #expect(queued < 500, "\(queued) queued")
        #expect(queued > 300, "\(queued) queued")
        #expect(engine.statistics.queuedBytes <= 100_000)
        #expect(transport.frames[ConnectionID(1)]?.count == 2_000 - queued, "one EXPIRE per message that did not fit")
    }

    @Test("one offline id holds at most maxQueuedBytesPerDestination (half the output limit), so its registration flush always fits")
    func perDestinationCap() {
        let (engine, transport) = engine(ProtocolSettings(maxQueuedBytesPerDestination: 200_000))
        let payload = String(repeating: "y", count: 50_000)
        for _ in 0..<10 {
            engine.receive(Array(#"{"type":"OFFER","dst":"late","payload":"\#(payload)"}"#.utf8), from: ConnectionID(1))
        }
        #expect(engine.statistics.queuedMessages == 3, "three 50 kB messages fit in 200,000 bytes, a fourth does not")
        #expect(transport.frames[ConnectionID(1)]?.count == 7)
        transport.frames = [:]
        engine.register(ConnectionID(3), request: RegistrationRequest(id: "late", token: "t", key: "peerjs"))
        #expect(transport.frames[ConnectionID(3)]?.count == 4, "OPEN and the three kept")
        #expect(engine.statistics.queuedBytes == 0)
    }
}
