import IPC
import NIOCore
import NIOEmbedded
import PeerProtocol
import Testing

@testable import Broker

/// The auth helper's side of the channel, in memory: records what the broker sends, and can be
/// full (`wouldBlock`) or broken.
final class FakeLink: AuthLink {
    var frames: [(type: FrameType, requestID: UInt32, payload: [UInt8])] = []
    var full = false
    var broken = false

    func sendFrame(_ frame: EncodedFrame) throws(IPCError) {
        if broken { throw IPCError(.truncated, "the test broke the link") }
        if full { throw IPCError(.wouldBlock, "the test filled the link") }
        frames.append((frame.type, frame.requestID, frame.payload))
    }

    /// The questions sent so far, with their request ids.
    var queries: [(requestID: UInt32, query: AuthQuery)] {
        frames.filter { $0.type == .authQuery }.compactMap { frame in
            (try? AuthQuery(decoding: frame.payload)).map { (frame.requestID, $0) }
        }
    }

    var events: [PeerEventMessage] {
        frames.filter { $0.type == .peerEvent }.compactMap { try? PeerEventMessage(decoding: $0.payload) }
    }
}

/// A broker with an auth helper (`--auth-timeout` 500 ms) on a ``FakeLink``.
struct AuthRig {
    static let timeoutMs: Int64 = 500
    let broker = TestBroker(BrokerConfiguration(authTimeoutMs: AuthRig.timeoutMs))
    let link = FakeLink()
    let generation: Int
    var auth: AuthClient { broker.state.auth! }

    init() {
        generation = broker.state.auth!.attach(link: link)
    }

    /// A fresh rig and a client of it waiting for its verdict.
    static func asked(_ id: String = "alice") throws -> (AuthRig, Rig) {
        let rig = AuthRig()
        return (rig, try rig.ask(id))
    }

    /// A client that has sent its upgrade and waits for the verdict (nothing has left yet).
    func ask(_ id: String, version: String = "") throws -> Rig {
        let rig = try #require(try broker.connect())
        rig.held.holding = false
        try rig.send(upgradeRequest("key=peerjs&id=\(id)&token=t" + (version.isEmpty ? "" : "&version=\(version)")))
        return rig
    }

    func answer(_ requestID: UInt32, allow: Bool, reason: String = "") {
        auth.handle(.verdict(requestID: requestID, AuthVerdict(allow: allow, reason: reason)), generation: generation)
    }

    /// Allows the first question after its client was dealt with otherwise: nothing registers.
    func allowTooLate() {
        answer(link.queries[0].requestID, allow: true)
        #expect(broker.state.engine.peers(key: "peerjs").isEmpty, "a verdict registered a client it no longer concerns")
    }
}

@Suite("Registration with the auth helper: verdicts, deadline, a lost helper, back-pressure")
struct AuthFlowTests {
    @Test("the question carries id, token, key and the client's address; nothing leaves before the verdict; allow → 101 and OPEN")
    func allow() throws {
        let (rig, client) = try AuthRig.asked()
        #expect(try client.writtenBytes().isEmpty, "the 101 left before the verdict")
        let asked = try #require(rig.link.queries.first)
        #expect(asked.query == AuthQuery(id: "alice", token: "t", key: "peerjs", ip: "192.0.2.7", version: ""))
        rig.answer(asked.requestID, allow: true)
        #expect(try client.frames() == [.open])
        #expect(rig.broker.state.engine.peers(key: "peerjs") == ["alice"])
    }

    @Test("deny → ERROR with the helper's reason (Error on Auth when it gives none) and a close")
    func deny() throws {
        let rig = AuthRig()
        let first = try rig.ask("alice")
        let second = try rig.ask("bob")
        let asked = rig.link.queries
        rig.answer(asked[0].requestID, allow: false, reason: ProtocolText.invalidID)
        rig.answer(asked[1].requestID, allow: false)
        #expect(try first.frames() == refusal(ProtocolText.invalidID))
        #expect(try second.frames() == refusal(ProtocolText.authFailed))
        rig.broker.loop.run()
        #expect(!first.channel.isActive && !second.channel.isActive)
        #expect(rig.broker.state.engine.peers(key: "peerjs").isEmpty)
    }

    @Test("no verdict within --auth-timeout → Auth Timeout; a verdict after it is ignored")
    func timeout() throws {
        let (rig, client) = try AuthRig.asked()
        rig.broker.loop.advanceTime(by: .milliseconds(AuthRig.timeoutMs - 1))
        #expect(try client.writtenBytes().isEmpty)
        rig.broker.loop.advanceTime(by: .milliseconds(1))
        #expect(try client.frames() == refusal(ProtocolText.authTimeout))
        rig.allowTooLate()
    }

    @Test("a lost helper fails the open questions (Error on Auth), and every later one at once until a new one attaches")
    func lostHelper() throws {
        let rig = AuthRig()
        let waiting = try rig.ask("alice")
        rig.auth.handle(.closed("the helper died"), generation: rig.generation)
        #expect(try waiting.frames() == refusal(ProtocolText.authFailed))
        #expect(try rig.ask("bob").frames() == refusal(ProtocolText.authFailed))
        let replacement = FakeLink()
        let generation = rig.auth.attach(link: replacement)
        let carol = try rig.ask("carol")
        rig.auth.handle(.verdict(requestID: replacement.queries[0].requestID, AuthVerdict(allow: true)), generation: generation)
        #expect(try carol.frames() == [.open])
    }

    @Test("a helper replaced while questions are open: they fail, and the old channel's verdicts are ignored")
    func replacedHelper() throws {
        let (rig, client) = try AuthRig.asked()
        rig.auth.attach(link: FakeLink())
        #expect(try client.frames() == refusal(ProtocolText.authFailed))
        rig.allowTooLate()
    }

    @Test("a full channel holds questions back in order and sends them as it drains; none is denied for it")
    func backPressure() throws {
        let rig = AuthRig()
        rig.link.full = true
        let alice = try rig.ask("alice")
        let bob = try rig.ask("bob")
        #expect(rig.auth.held == 2 && rig.link.frames.isEmpty)
        rig.broker.loop.advanceTime(by: .milliseconds(1))
        #expect(rig.auth.held == 2, "sent into a full channel")
        rig.link.full = false
        rig.broker.loop.advanceTime(by: .milliseconds(2))  // the retry has doubled to 2 ms
        #expect(rig.auth.held == 0)
        #expect(rig.link.queries.map(\.query.id) == ["alice", "bob"])
        for asked in rig.link.queries { rig.answer(asked.requestID, allow: true) }
        #expect(try alice.frames() == [.open])
        #expect(try bob.frames() == [.open])
    }

    @Test("a question that times out while held back is never sent")
    func heldAndTimedOut() throws {
        let rig = AuthRig()
        rig.link.full = true
        let client = try rig.ask("alice")
        rig.broker.loop.advanceTime(by: .milliseconds(AuthRig.timeoutMs))
        #expect(try client.frames() == refusal(ProtocolText.authTimeout))
        rig.link.full = false
        rig.broker.loop.advanceTime(by: .milliseconds(100))
        #expect(rig.link.queries.isEmpty)
    }

    @Test("connection and disconnect events carry the client's address")
    func events() throws {
        let (rig, client) = try AuthRig.asked()
        rig.answer(rig.link.queries[0].requestID, allow: true)
        try client.channel.close().wait()
        #expect(rig.link.events == [
            PeerEventMessage(kind: .connection, id: "alice", key: "peerjs", ip: "192.0.2.7"),
            PeerEventMessage(kind: .disconnect, id: "alice", key: "peerjs", ip: "192.0.2.7"),
        ])
    }

    @Test("a query over the channel's caps is refused Invalid ID without asking")
    func unaskable() throws {
        let rig = AuthRig()
        let client = try rig.ask("alice", version: String(repeating: "9", count: AuthQuery.maxVersionLength + 1))
        #expect(try client.frames() == refusal(ProtocolText.invalidID))
        #expect(rig.link.frames.isEmpty)
    }

    @Test("a client that leaves before its verdict: the verdict finds nothing to register")
    func clientGone() throws {
        let (rig, client) = try AuthRig.asked()
        try client.channel.close().wait()
        #expect(rig.broker.state.engine.waitingForAuthorization == 0)
        rig.allowTooLate()
        #expect(rig.link.events.isEmpty, "a connection event for a client that is gone")
    }
}

/// ``AuthClient`` without a broker: what it sends and what it answers, by itself.
@Suite("AuthClient on its own")
struct AuthClientTests {
    final class Answers {
        var list: [(ConnectionID, AuthorizationAnswer)] = []

        func record(_ query: AuthorizationQuery, _ answer: AuthorizationAnswer) { list.append((query.connection, answer)) }
    }

    static func client(_ loop: EmbeddedEventLoop, _ answers: Answers) -> AuthClient {
        AuthClient(loop: loop, timeoutMs: 100, logger: TestBroker.quiet, answer: answers.record)
    }

    static func query(_ n: UInt64) -> AuthorizationQuery {
        AuthorizationQuery(connection: ConnectionID(n), id: "p\(n)", token: "t", key: "k", ip: "192.0.2.1", version: "")
    }

    @Test("without a helper every question fails at once; with one, its answer comes through `answer`, once")
    func answers() throws {
        let loop = EmbeddedEventLoop()
        let answers = Answers()
        let client = Self.client(loop, answers)
        #expect(client.ask(Self.query(1)) == .failed)
        let link = FakeLink()
        let generation = client.attach(link: link)
        #expect(client.ask(Self.query(2)) == nil)
        client.handle(.verdict(requestID: link.queries[0].requestID, AuthVerdict(allow: false, reason: "no")), generation: generation)
        client.handle(.verdict(requestID: link.queries[0].requestID, AuthVerdict(allow: true)), generation: generation)
        #expect(answers.list.map(\.0) == [ConnectionID(2)])
        #expect(answers.list.map(\.1) == [.deny("no")])
        #expect(client.waiting == 0)
    }

    @Test("past maxUnsent frames held back a question fails at once; a broken channel fails every open one")
    func limits() throws {
        let loop = EmbeddedEventLoop()
        let answers = Answers()
        let client = Self.client(loop, answers)
        let link = FakeLink()
        client.attach(link: link)
        link.full = true
        for n in 0..<UInt64(AuthClient.maxUnsent) { #expect(client.ask(Self.query(n)) == nil) }
        #expect(client.ask(Self.query(9999)) == .failed)
        link.full = false
        link.broken = true
        loop.advanceTime(by: .milliseconds(1))
        #expect(answers.list.count == AuthClient.maxUnsent)
        #expect(answers.list.allSatisfy { $0.1 == .failed })
        #expect(client.ask(Self.query(10000)) == .failed, "a broken channel is not used again")
    }

    @Test("the deadline of each question runs from when it was asked")
    func deadlines() throws {
        let loop = EmbeddedEventLoop()
        let answers = Answers()
        let client = Self.client(loop, answers)
        client.attach(link: FakeLink())
        _ = client.ask(Self.query(1))
        loop.advanceTime(by: .milliseconds(60))
        _ = client.ask(Self.query(2))
        loop.advanceTime(by: .milliseconds(40))
        #expect(answers.list.map(\.0) == [ConnectionID(1)])
        loop.advanceTime(by: .milliseconds(59))
        #expect(answers.list.count == 1)
        loop.advanceTime(by: .milliseconds(1))
        #expect(answers.list.map(\.1) == [.timedOut, .timedOut])
    }
}
