import PeerProtocol
import Testing

/// A transport for a clustered engine: records frames, forwards to other instances and releases.
final class ClusterTransport: PeerTransport {
    var frames: [ConnectionID: [String]] = [:]
    var closed: [ConnectionID] = []
    var forwarded: [(instance: String, id: String, source: String, frame: String)] = []
    var released: [String] = []
    var forwardFails = false

    func send(_ frame: UnsafeRawBufferPointer, to connection: ConnectionID) -> Bool {
        frames[connection, default: []].append(String(decoding: frame, as: UTF8.self))
        return true
    }
    func close(_ connection: ConnectionID) { closed.append(connection) }
    func ping(_ connection: ConnectionID) {}
    func peerEvent(_ event: PeerEvent) {}
    func forward(_ frame: UnsafeRawBufferPointer, key: String, to id: String, from source: String, at instance: String) -> Bool {
        guard !forwardFails else { return false }
        forwarded.append((instance, id, source, String(decoding: frame, as: UTF8.self)))
        return true
    }
    func released(id: String, key: String) { released.append(id) }

    func drain(_ connection: UInt64) -> [String] {
        defer { frames[ConnectionID(connection)] = [] }
        return frames[ConnectionID(connection)] ?? []
    }
}

struct ClusterHarness {
    let clock = ManualClock(startingAt: 1_000)
    let transport = ClusterTransport()
    let engine: SignalingEngine<ClusterTransport, InMemoryRegistry>

    init() {
        engine = SignalingEngine(
            settings: ProtocolSettings(clustered: true), registry: InMemoryRegistry(), transport: transport, clock: clock)
        engine.directory(available: true)
    }

    /// Registers `id` on `connection` with the directory granting it.
    func join(_ connection: UInt64, _ id: String, token: String = "t") {
        let c = ConnectionID(connection)
        let outcome = engine.register(c, request: RegistrationRequest(id: id, token: token, key: "peerjs"))
        guard case .claiming(let claim) = outcome else {
            Issue.record("expected a claim, got \(outcome)")
            return
        }
        #expect(claim == DirectoryClaim(connection: c, id: id, key: "peerjs", token: token))
        #expect(engine.claimed(.granted, for: c) == .open)
    }
}

@Suite("Clustered engine (the peer directory)")
struct ClusterEngineTests {
    @Test("a new id is claimed before OPEN; the directory's refusals are the client's ERROR / ID-TAKEN")
    func claims() {
        let h = ClusterHarness()
        h.join(1, "alice")
        #expect(h.transport.drain(1) == [#"{"type":"OPEN"}"#])
        for (n, answer, frame) in [
            (2 as UInt64, ClaimAnswer.taken, #"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#),
            (3, .limit, #"{"type":"ERROR","payload":{"msg":"Server has reached its concurrent user limit"}}"#),
            (4, .unavailable, #"{"type":"ERROR","payload":{"msg":"The peer directory is unavailable, try again later"}}"#),
        ] {
            _ = h.engine.register(ConnectionID(n), request: RegistrationRequest(id: "x\(n)", token: "t", key: "peerjs"))
            #expect(h.engine.claimed(answer, for: ConnectionID(n)) == .refuse(answer == .taken ? .idTaken : answer == .limit ? .concurrentLimit : .directoryUnavailable))
            #expect(h.transport.drain(n) == [frame])
            #expect(h.transport.closed.contains(ConnectionID(n)))
        }
        // A local id needs no claim: same token re-attaches, another token is a takeover (ID-TAKEN
        // once the holder answers its ping).
        #expect(h.engine.register(ConnectionID(5), request: RegistrationRequest(id: "alice", token: "other", key: "peerjs")) == .takingOver)
        h.engine.touch(ConnectionID(1))
        #expect(h.transport.drain(5) == [#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#])
        #expect(h.engine.register(ConnectionID(6), request: RegistrationRequest(id: "alice", token: "t", key: "peerjs")) == .replacedPrevious)
    }

    @Test("a takeover of a local id: the holder's row is released, then claimed again for the new token")
    func takeover() {
        let h = ClusterHarness()
        h.join(1, "alice")
        #expect(h.engine.register(ConnectionID(2), request: RegistrationRequest(id: "alice", token: "new", key: "peerjs")) == .takingOver)
        h.clock.advance(by: 2000)
        let claims = h.engine.tick()
        #expect(claims == [DirectoryClaim(connection: ConnectionID(2), id: "alice", key: "peerjs", token: "new")])
        #expect(h.transport.released == ["alice"], "the release goes before the claim, on the same channel")
        #expect(h.transport.closed.contains(ConnectionID(1)))
        #expect(h.engine.claimed(.granted, for: ConnectionID(2)) == .open)
        #expect(h.engine.registry.entry(for: "alice", key: "peerjs")?.token == "new")
    }

    @Test("the directory down at a takeover's deadline: the claimant is refused and the holder keeps its id and row")
    func takeoverWithoutDirectory() {
        let h = ClusterHarness()
        h.join(1, "alice")
        _ = h.engine.register(ConnectionID(2), request: RegistrationRequest(id: "alice", token: "new", key: "peerjs"))
        h.engine.directory(available: false)
        h.clock.advance(by: 2000)
        #expect(h.engine.tick().isEmpty)
        #expect(h.transport.drain(2) == [#"{"type":"ERROR","payload":{"msg":"The peer directory is unavailable, try again later"}}"#])
        #expect(h.transport.released.isEmpty)
        #expect(!h.transport.closed.contains(ConnectionID(1)))
        #expect(h.engine.registry.entry(for: "alice", key: "peerjs")?.token == "t")
    }

    @Test("while the directory is down a new id is refused at once, and a message for a remote peer gets EXPIRE")
    func directoryDown() {
        let h = ClusterHarness()
        h.join(1, "alice")
        h.engine.remoteRegistered(id: "bob", key: "peerjs", instance: "b")
        _ = h.transport.drain(1)
        h.engine.directory(available: false)
        h.transport.forwardFails = true
        #expect(h.engine.register(ConnectionID(2), request: RegistrationRequest(id: "carol", token: "t", key: "peerjs")) == .rejected(.directoryUnavailable))
        h.engine.receive(Array(#"{"type":"OFFER","dst":"bob","payload":1}"#.utf8), from: ConnectionID(1))
        #expect(h.transport.drain(1) == [#"{"type":"EXPIRE","src":"bob","dst":"alice"}"#])
    }

    @Test("a message for a remote peer is forwarded to its instance; one for an unknown id waits and follows it there")
    func forwarding() {
        let h = ClusterHarness()
        h.join(1, "alice")
        h.engine.remoteRegistered(id: "bob", key: "peerjs", instance: "b")
        h.engine.receive(Array(#"{"type":"OFFER","dst":"bob","payload":1}"#.utf8), from: ConnectionID(1))
        #expect(h.transport.forwarded.map(\.instance) == ["b"])
        #expect(h.transport.forwarded.first?.frame == #"{"type":"OFFER","src":"alice","dst":"bob","payload":1}"#)
        h.engine.receive(Array(#"{"type":"OFFER","dst":"dave","payload":2}"#.utf8), from: ConnectionID(1))
        #expect(h.transport.forwarded.count == 1)
        h.engine.remoteRegistered(id: "dave", key: "peerjs", instance: "c")
        #expect(h.transport.forwarded.last?.instance == "c")
        #expect(h.transport.forwarded.last?.frame == #"{"type":"OFFER","src":"alice","dst":"dave","payload":2}"#)
        #expect(Set(h.engine.peers(key: "peerjs")) == ["alice", "bob", "dave"])
        h.engine.remoteInstanceGone("b")
        #expect(Set(h.engine.peers(key: "peerjs")) == ["alice", "dave"])
    }

    @Test("a frame from another instance is delivered, or queued until expiry, whose EXPIRE goes back to the sender's instance")
    func delivery() {
        let h = ClusterHarness()
        h.join(1, "alice")
        _ = h.transport.drain(1)
        let frame = #"{"type":"OFFER","src":"bob","dst":"alice","payload":1}"#
        frame.utf8.withContiguousStorageIfAvailable { h.engine.deliver(UnsafeRawBufferPointer($0), key: "peerjs", to: "alice", from: "bob") }
        #expect(h.transport.drain(1) == [frame])
        h.engine.remoteRegistered(id: "bob", key: "peerjs", instance: "b")
        let late = #"{"type":"OFFER","src":"bob","dst":"erin","payload":1}"#
        late.utf8.withContiguousStorageIfAvailable { h.engine.deliver(UnsafeRawBufferPointer($0), key: "peerjs", to: "erin", from: "bob") }
        h.clock.advance(by: 6_000)
        h.engine.tick()
        #expect(h.transport.forwarded.last?.instance == "b")
        #expect(h.transport.forwarded.last?.frame == #"{"type":"EXPIRE","src":"erin","dst":"bob"}"#)
    }

    @Test("leaving releases the id; a peer that moved to another instance is closed without releasing its row")
    func releases() {
        let h = ClusterHarness()
        h.join(1, "alice")
        h.join(2, "bob")
        h.engine.connectionClosed(ConnectionID(1))
        #expect(h.transport.released == ["alice"])
        h.engine.movedElsewhere(id: "bob", key: "peerjs")
        #expect(h.transport.closed.contains(ConnectionID(2)))
        #expect(h.transport.released == ["alice"])
        // A client that leaves while its claim is out: the release follows the claim.
        _ = h.engine.register(ConnectionID(3), request: RegistrationRequest(id: "carol", token: "t", key: "peerjs"))
        h.engine.connectionClosed(ConnectionID(3))
        #expect(h.transport.released == ["alice", "carol"])
        #expect(h.engine.claimed(.granted, for: ConnectionID(3)) == .none)
    }

    @Test("an id whose claim is out is as good as registered: another token is ID-TAKEN at once; the row goes only when nobody here holds or claims it")
    func pendingClaims() {
        let h = ClusterHarness()
        let request = { (token: String) in RegistrationRequest(id: "dave", token: token, key: "peerjs") }
        guard case .claiming = h.engine.register(ConnectionID(1), request: request("t1")) else { Issue.record("no claim"); return }
        #expect(h.engine.register(ConnectionID(2), request: request("t2")) == .rejected(.idTaken))
        // The same token (a reconnect racing its first attempt) claims too; the first one leaves.
        guard case .claiming = h.engine.register(ConnectionID(3), request: request("t1")) else { Issue.record("no claim"); return }
        h.engine.connectionClosed(ConnectionID(1))
        #expect(h.transport.released.isEmpty, "connection 3 still claims dave")
        #expect(h.engine.claimed(.granted, for: ConnectionID(3)) == .open)
        h.engine.connectionClosed(ConnectionID(3))
        #expect(h.transport.released == ["dave"])
    }

    @Test("a claim refused as unavailable (a timeout: it may be granted later) and a grant refused here after all release the id")
    func refusedClaimsRelease() {
        let h = ClusterHarness()
        _ = h.engine.register(ConnectionID(1), request: RegistrationRequest(id: "erin", token: "t", key: "peerjs"))
        #expect(h.engine.claimed(.unavailable, for: ConnectionID(1)) == .refuse(.directoryUnavailable))
        #expect(h.transport.released == ["erin"])
        _ = h.engine.register(ConnectionID(2), request: RegistrationRequest(id: "finn", token: "t", key: "peerjs"))
        h.engine.update(ProtocolSettings(keys: ["other"], clustered: true))  // a reload took the key away
        #expect(h.engine.claimed(.granted, for: ConnectionID(2)) == .refuse(.invalidKey))
        #expect(h.transport.released == ["erin", "finn"])
    }

    @Test("another instance's word is checked: unknown realms, bad ids and more remote ids than concurrent_limit are ignored")
    func remoteBounds() {
        let h = ClusterHarness()
        h.engine.update(ProtocolSettings(concurrentLimit: 2, clustered: true))
        h.engine.remoteRegistered(id: "a", key: "other-key", instance: "b")
        h.engine.remoteRegistered(id: "bad\nid", key: "peerjs", instance: "b")
        #expect(h.engine.remoteCount == 0)
        for id in ["a", "b", "c"] { h.engine.remoteRegistered(id: id, key: "peerjs", instance: "b") }
        #expect(h.engine.remoteCount == 2)
        h.engine.remoteRegistered(id: "a", key: "peerjs", instance: "c")  // a move of a known id still counts
        h.engine.receive(Array(#"{"type":"OFFER","dst":"a","payload":1}"#.utf8), from: ConnectionID(9))
        #expect(h.engine.remoteCount == 2)
    }
}
