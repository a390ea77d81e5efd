import NIOCore
import NIOEmbedded
import PeerProtocol
import Testing

@testable import Broker

/// A registered PeerJS socket: relay, fragments and their deadline, frame checks, the close
/// handshake, liveness and a peer that does not read — on virtual time.
@Suite("PeerJS sockets: relay, fragments, limits, liveness")
struct PeerSocketTests {
    static let offer = #"{"type":"OFFER","dst":"bob","payload":{"sdp":"x"}}"#
    static let relayed = #"{"type":"OFFER","src":"alice","dst":"bob","payload":{"sdp":"x"}}"#

    /// alice and bob, registered on one broker.
    static func pair(_ configuration: BrokerConfiguration = BrokerConfiguration(handshakeTimeoutMs: Rig.timeoutMs))
        throws -> (TestBroker, alice: Rig, bob: Rig)
    {
        let broker = TestBroker(configuration)
        return (broker, try #require(try broker.peer("alice")), try #require(try broker.peer("bob")))
    }

    @Test("a message for a registered peer is relayed with its sender as src")
    func relay() throws {
        let (_, alice, bob) = try Self.pair()
        try alice.message(Self.offer)
        #expect(try bob.frames() == [.text(Self.relayed)])
        #expect(try alice.frames().isEmpty)
    }

    @Test("a fragmented message is joined and relayed once its last fragment arrives")
    func fragments() throws {
        let (_, alice, bob) = try Self.pair()
        let bytes = Array(Self.offer.utf8)
        try alice.send(clientFrame(0x1, Array(bytes[..<10]), fin: false))
        try alice.send(clientFrame(0x0, Array(bytes[10..<20]), fin: false))
        #expect(try bob.frames().isEmpty)
        try alice.send(clientFrame(0x0, Array(bytes[20...])))
        #expect(try bob.frames() == [.text(Self.relayed)])
    }

    @Test("a fragmented message not complete within --handshake_timeout closes the connection with 1008")
    func fragmentDeadline() throws {
        let (broker, alice, bob) = try Self.pair()
        try alice.send(clientFrame(0x1, Array("{".utf8), fin: false))
        try bob.send(clientFrame(0x1, Array("{".utf8), fin: false))
        broker.loop.advanceTime(by: .milliseconds(Rig.timeoutMs / 2))
        try bob.send(clientFrame(0x0, Array("}".utf8)))
        broker.loop.advanceTime(by: .milliseconds(Rig.timeoutMs / 2 - 1))
        #expect(alice.channel.isActive)
        broker.loop.advanceTime(by: .milliseconds(1))
        #expect(try alice.frames() == [.close(1008)])
        #expect(!alice.channel.isActive)
        broker.loop.advanceTime(by: .milliseconds(Rig.timeoutMs))
        #expect(bob.channel.isActive, "a message completed in time left its deadline running")
    }

    @Test("frame checks: an unmasked frame is 1002, a message over --max_message_size 1009")
    func frameChecks() throws {
        let (_, alice, bob) = try Self.pair(BrokerConfiguration(maxMessageBytes: 64))
        try alice.send([0x81, 0x02] + Array("hi".utf8))
        #expect(try alice.frames() == [.close(1002)])
        try? bob.send(clientFrame(0x1, Array(repeating: UInt8(ascii: " "), count: 65)))
        #expect(try bob.frames() == [.close(1009)])
    }

    @Test("a close frame is echoed with its code and the connection ends; its id is free again")
    func closeEcho() throws {
        let (broker, alice, _) = try Self.pair()
        try alice.send(clientFrame(0x8, [0x03, 0xE8]))
        #expect(try alice.frames() == [.close(1000)])
        broker.loop.run()
        #expect(!alice.channel.isActive)
        #expect(broker.state.engine.peers(key: "peerjs") == ["bob"])
    }

    @Test("a peer that does not read (past --output_limit) is dropped; its sender gets LEAVE")
    func stuckPeer() throws {
        let (broker, alice, bob) = try Self.pair()
        bob.channel.isWritable = false
        try alice.message(Self.offer)
        #expect(try alice.frames() == [.text(#"{"type":"LEAVE","src":"bob","dst":"alice"}"#)])
        #expect(broker.state.engine.peers(key: "peerjs") == ["alice"])
        broker.loop.run()
        #expect(!bob.channel.isActive)
    }

    @Test("liveness: a silent peer is pinged after a third of --alive_timeout and dropped at all of it; a pong keeps it")
    func liveness() throws {
        let (broker, alice, bob) = try Self.pair(BrokerConfiguration(protocolSettings: ProtocolSettings(aliveTimeoutMs: 3000)))
        func tick(_ milliseconds: Int64) {
            broker.loop.advanceTime(by: .milliseconds(milliseconds))
            broker.state.engine.tick()
            broker.state.connections.flush()
        }
        tick(1000)
        #expect(try alice.frames() == [SentFrame(opcode: 0x9, payload: [])])
        #expect(try bob.frames() == [SentFrame(opcode: 0x9, payload: [])])
        try bob.send(clientFrame(0xA, []))
        tick(2000)
        #expect(try alice.frames() == [.close()])
        #expect(broker.state.engine.peers(key: "peerjs") == ["bob"])
        broker.loop.run()
        #expect(!alice.channel.isActive)
        #expect(bob.channel.isActive)
    }

    @Test("takeover: the holder gets a ping at once; silent, it is closed at --takeover-timeout and the claimant gets 101 and OPEN together; a pong keeps the id")
    func takeover() throws {
        let broker = TestBroker(BrokerConfiguration(protocolSettings: ProtocolSettings(takeoverTimeoutMs: 400)))
        func tick(_ milliseconds: Int64) {
            broker.loop.advanceTime(by: .milliseconds(milliseconds))
            broker.state.tick()
        }
        let alice = try #require(try broker.peer("alice"))
        let claimant = try #require(try broker.peer("alice", token: "new", expectOpen: false))
        #expect(try alice.frames() == [SentFrame(opcode: 0x9, payload: [])], "the ping leaves with the claim, not at the next tick")
        #expect(try claimant.writtenBytes().isEmpty, "the 101 waits for the outcome")
        tick(399)
        #expect(try claimant.writtenBytes().isEmpty)
        tick(1)
        #expect(try alice.frames() == [.close()])
        let written = try claimant.writtenBytes()
        #expect(String(decoding: written, as: UTF8.self).hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(sentFrames(written) == [.open])
        #expect(broker.state.engine.registry.entry(for: "alice", key: "peerjs")?.token == "new")

        // The new holder answers the next claimant's ping: that claimant gets 101, ID-TAKEN, close.
        let late = try #require(try broker.peer("alice", token: "late", expectOpen: false))
        #expect(try claimant.frames() == [SentFrame(opcode: 0x9, payload: [])])
        try claimant.send(clientFrame(0xA, []))
        #expect(try late.frames() == [.text(#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#), .close()])
        tick(1000)
        #expect(broker.state.engine.registry.entry(for: "alice", key: "peerjs")?.token == "new")
        broker.loop.run()
        #expect(claimant.channel.isActive)
        #expect(!late.channel.isActive)
    }
}
