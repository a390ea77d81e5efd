import PeerProtocol
import Testing

/// `--takeover-timeout` (peerjs-server#224): another token asks for a registered id, the holder
/// is pinged, and silence until the deadline hands the id over; any sign of life keeps it.
@Suite("Takeover of an id held by a silent socket")
struct TakeoverTests {
    static let idTaken = #"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#

    @Test("a holder silent until the deadline is closed like a LEAVE; the claimant gets OPEN and the id")
    func silentHolder() {
        let h = Harness()
        h.join(1, "a")
        h.join(3, "c")
        _ = h.frames(1)
        #expect(h.join(2, "a", token: "new") == .takingOver)
        #expect(h.transport.pinged == [ConnectionID(1)])
        h.clock.advance(by: 1999)
        h.engine.tick()
        #expect(h.frames(2) == [], "decided before the deadline")
        #expect(!h.transport.closed.contains(ConnectionID(1)))
        // Meanwhile messages for `a` still reach the holder.
        h.send(3, #"{"type":"OFFER","dst":"a","payload":1}"#)
        #expect(h.frames(1).count == 1)
        h.clock.advance(by: 1)
        h.engine.tick()
        #expect(h.transport.closed.contains(ConnectionID(1)))
        #expect(h.frames(2) == [open])
        #expect(h.engine.registry.entry(for: "a", key: "peerjs") == PeerEntry(token: "new", connection: ConnectionID(2)))
        #expect(h.transport.events.suffix(2) == [
            .disconnected(id: "a", key: "peerjs", connection: ConnectionID(1), ip: "", reason: .takenOver),
            .connected(id: "a", key: "peerjs", connection: ConnectionID(2), ip: ""),
        ])
        h.send(3, #"{"type":"OFFER","dst":"a","payload":2}"#)
        #expect(h.frames(2) == [#"{"type":"OFFER","src":"c","dst":"a","payload":2}"#])
        #expect(h.engine.waitingForTakeover == 0)
    }

    @Test("two claimants at once: the first waits and wins, the second gets ID-TAKEN at once")
    func twoClaimants() {
        let h = Harness()
        h.join(1, "a")
        #expect(h.join(2, "a", token: "x") == .takingOver)
        #expect(h.join(3, "a", token: "y") == .rejected(.idTaken))
        #expect(h.frames(3) == [Self.idTaken])
        #expect(h.transport.pinged == [ConnectionID(1)], "one ping per holder")
        h.clock.advance(by: 2000)
        h.engine.tick()
        #expect(h.frames(2) == [open])
        #expect(h.engine.registry.entry(for: "a", key: "peerjs")?.connection == ConnectionID(2))
        // The new holder is pinged in its turn when yet another token asks.
        #expect(h.join(4, "a", token: "z") == .takingOver)
        #expect(h.transport.pinged.last == ConnectionID(2))
    }

    @Test("a holder that closes during the wait frees the id at the next tick, before the deadline")
    func holderCloses() {
        let h = Harness()
        h.join(1, "a")
        h.join(2, "a", token: "new")
        h.engine.connectionClosed(ConnectionID(1))
        h.clock.advance(by: 5)
        h.engine.tick()
        #expect(h.frames(2) == [open])
    }

    @Test("a claimant that leaves during the wait is forgotten: the holder stays and can be claimed again")
    func claimantLeaves() {
        let h = Harness()
        h.join(1, "a")
        h.join(2, "a", token: "new")
        h.engine.connectionClosed(ConnectionID(2))
        #expect(h.engine.waitingForTakeover == 0)
        h.clock.advance(by: 5000)
        h.engine.tick()
        #expect(!h.transport.closed.contains(ConnectionID(1)))
        #expect(h.engine.registry.entry(for: "a", key: "peerjs")?.connection == ConnectionID(1))
        #expect(h.join(3, "a", token: "new") == .takingOver)
    }

    @Test("the old token comes back on a new socket during the wait: it re-attaches, and the claimant gets ID-TAKEN")
    func sameTokenReturns() {
        let h = Harness()
        h.join(1, "a")
        h.join(2, "a", token: "new")
        #expect(h.join(3, "a") == .replacedPrevious)
        h.clock.advance(by: 5)
        h.engine.tick()
        #expect(h.frames(2) == [Self.idTaken])
        #expect(h.engine.registry.entry(for: "a", key: "peerjs")?.connection == ConnectionID(3))
    }

    @Test("a holder with output still waiting in the server is not evicted at the deadline (slow, maybe not dead)")
    func pendingOutput() {
        let h = Harness()
        h.join(1, "a")
        h.join(2, "a", token: "new")
        h.transport.pending = [ConnectionID(1)]
        h.clock.advance(by: 2000)
        h.engine.tick()
        #expect(h.frames(2) == [Self.idTaken])
        #expect(!h.transport.closed.contains(ConnectionID(1)))
        #expect(h.engine.counters.takeoverRefused == 1)
    }

    @Test("a reload that removed the key before the deadline refuses the claimant and keeps the holder")
    func keyRemoved() {
        let h = Harness(ProtocolSettings(keys: ["peerjs", "room"]))
        h.join(1, "a", key: "room")
        h.join(2, "a", token: "new", key: "room")
        h.engine.update(ProtocolSettings(keys: ["peerjs"]))
        h.clock.advance(by: 2000)
        h.engine.tick()
        #expect(h.frames(2) == [#"{"type":"ERROR","payload":{"msg":"Invalid key provided"}}"#])
        #expect(!h.transport.closed.contains(ConnectionID(1)))
    }

    @Test("--takeover-timeout 0: ID-TAKEN at once, no ping (peerjs-server's behaviour)")
    func off() {
        let h = Harness(ProtocolSettings(takeoverTimeoutMs: 0))
        h.join(1, "a")
        #expect(h.join(2, "a", token: "new") == .rejected(.idTaken))
        #expect(h.frames(2) == [Self.idTaken])
        #expect(h.transport.pinged.isEmpty)
    }

    @Test("with a policy the claimant is asked like any registration, and waits only once allowed")
    func throughPolicy() {
        let h = Harness(ProtocolSettings(authorizes: true))
        let request = RegistrationRequest(id: "a", token: "t", key: "peerjs")
        if case .authorize = h.engine.admit(ConnectionID(1), request: request, ip: "192.0.2.1") {} else { Issue.record("not asked") }
        #expect(h.engine.verdict(.allow, for: ConnectionID(1)) == .open)
        let claim = RegistrationRequest(id: "a", token: "new", key: "peerjs")
        _ = h.engine.admit(ConnectionID(2), request: claim, ip: "192.0.2.2")
        #expect(h.transport.pinged.isEmpty, "pinged before the policy allowed the claimant")
        #expect(h.engine.verdict(.allow, for: ConnectionID(2)) == .takeover)
        #expect(h.transport.pinged == [ConnectionID(1)])
        _ = h.engine.admit(ConnectionID(3), request: claim, ip: "192.0.2.3")
        #expect(h.engine.verdict(.deny("no"), for: ConnectionID(3)) == .refuse(.denied("no")))
        h.clock.advance(by: 2000)
        h.engine.tick()
        #expect(h.frames(2).last == open)
    }

    @Test("the tick comes often enough for the deadline: at most a quarter of it late")
    func tickInterval() {
        #expect(Harness(ProtocolSettings(takeoverTimeoutMs: 400)).engine.tickIntervalMs == 100)
        #expect(Harness(ProtocolSettings(takeoverTimeoutMs: 0)).engine.tickIntervalMs == 300)
    }
}

/// The counters behind the metrics endpoint's series (`peerjs_messages_relayed_total`, …).
@Suite("Engine counters")
struct EngineCounterTests {
    @Test("relayed messages by type, expiries, concurrent-limit refusals, takeovers and auth answers are counted")
    func counted() {
        let h = Harness(ProtocolSettings(expireTimeoutMs: 100, concurrentLimit: 2, cleanupIntervalMs: 10))
        h.join(1, "a")
        h.join(2, "b")
        h.send(1, #"{"type":"OFFER","dst":"b","payload":1}"#)
        h.send(1, #"{"type":"ANSWER","dst":"b","payload":1}"#)
        h.send(1, #"{"type":"CANDIDATE","dst":"b","payload":1}"#)
        h.send(1, #"{"type":"CANDIDATE","dst":"nobody","payload":1}"#)
        h.send(1, #"{"type":"HEARTBEAT"}"#)
        #expect(h.join(3, "c") == .rejected(.concurrentLimit))
        h.clock.advance(by: 200)
        h.engine.tick()
        h.join(4, "a", token: "x")
        h.engine.touch(ConnectionID(1))
        let c = h.engine.counters
        #expect((c.offers, c.answers, c.candidates, c.leaves, c.expires) == (1, 1, 2, 0, 0))
        #expect(c.expiredMessages == 1)
        #expect(c.concurrentLimitHits == 1)
        #expect((c.takenOver, c.takeoverRefused) == (0, 1))

        let p = Harness(ProtocolSettings(authorizes: true))
        for (n, answer) in [AuthorizationAnswer.allow, .deny("no"), .timedOut, .failed].enumerated() {
            _ = p.engine.admit(ConnectionID(UInt64(n)), request: RegistrationRequest(id: "p\(n)", token: "t", key: "peerjs"), ip: "")
            _ = p.engine.verdict(answer, for: ConnectionID(UInt64(n)))
        }
        #expect((p.engine.counters.authAllow, p.engine.counters.authDeny, p.engine.counters.authTimeout, p.engine.counters.authFailed) == (1, 1, 1, 1))
    }
}
