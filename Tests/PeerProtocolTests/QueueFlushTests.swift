import PeerProtocol
import Testing

/// A transport whose connections take a limited number of frames (then `send` fails, as the
/// broker's does for a connection past `--output_limit`).
private final class BudgetTransport: PeerTransport {
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
        #expect(transport.events.last == .disconnected(id: "C", key: "peerjs", connection: c, reason: .sendFailed))
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
