import NIOCore
import NIOEmbedded
import PeerProtocol
import Testing

@testable import Broker

/// The WebSocket upgrade on `{path}peerjs`, its deadline and the per-address limits, through the
/// whole connection pipeline on virtual time.
@Suite("WebSocket upgrade, deadlines and per-address limits")
struct UpgradeTests {
    static func rejected(_ reason: RejectReason) -> [SentFrame] {
        [SentFrame(opcode: 0x1, payload: reason.frame), .close()]
    }

    @Test("an upgrade gets 101 with the RFC 6455 accept value, then OPEN")
    func upgrade() throws {
        let rig = try #require(try TestBroker().connect())
        rig.held.holding = false
        try rig.send(upgradeRequest("key=peerjs&id=alice&token=t"))
        let written = try rig.writtenBytes()
        let head = String(decoding: written, as: UTF8.self)
        #expect(head.hasPrefix("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"))
        #expect(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
        #expect(sentFrames(written) == [.open])
        #expect(rig.state.engine.peers(key: "peerjs") == ["alice"])
    }

    @Test("refusals by the engine: ERROR (or ID-TAKEN), an empty close frame, and the connection ends")
    func refusals() throws {
        // Takeover off: another token's ID-TAKEN comes at once (TakeoverTests has the wait).
        let broker = TestBroker(
            BrokerConfiguration(protocolSettings: ProtocolSettings(takeoverTimeoutMs: 0), handshakeTimeoutMs: Rig.timeoutMs, maxHeaderBytes: 4096))
        _ = try broker.peer("alice")
        for (query, reason) in [
            ("key=peerjs&token=t", RejectReason.missingParameters), ("key=other&id=bob&token=t", .invalidKey),
            ("key=peerjs&id=alice&token=other", .idTaken), ("key=peerjs&id=a%0Ab&token=t", .malformedID),
        ] {
            let rig = try #require(try broker.connect())
            rig.held.holding = false
            try rig.send(upgradeRequest(query))
            #expect(try rig.frames() == Self.rejected(reason), "\(query)")
            rig.loop.run()
            #expect(!rig.channel.isActive, "\(query)")
        }
        #expect(broker.state.engine.peers(key: "peerjs") == ["alice"])
    }

    @Test("a connection that sends no request is closed at --handshake_timeout; an upgraded one is not")
    func handshakeDeadline() throws {
        let broker = TestBroker()
        let silent = try #require(try broker.connect())
        let peer = try #require(try broker.peer("alice"))
        broker.loop.advanceTime(by: .milliseconds(Rig.timeoutMs - 1))
        #expect(silent.channel.isActive)
        broker.loop.advanceTime(by: .milliseconds(1))
        #expect(!silent.channel.isActive)
        broker.loop.advanceTime(by: .milliseconds(Rig.timeoutMs * 5))
        #expect(peer.channel.isActive, "the upgrade did not end the handshake deadline")
    }

    @Test("frames that arrive with the head in one read are served after the upgrade")
    func framesWithHead() throws {
        let rig = try #require(try TestBroker().connect())
        rig.held.holding = false
        try rig.send(Array(upgradeRequest("key=peerjs&id=alice&token=t").utf8) + clientFrame(0x9, [5]))
        #expect(try rig.frames() == [.open, SentFrame(opcode: 0xA, payload: [5])])
    }

    @Test("--ip_limit: the next WebSocket from the address gets '{ip} has reached its concurrent user limit', until one closes")
    func ipLimit() throws {
        let broker = TestBroker(BrokerConfiguration(ipLimit: 1))
        let first = try #require(try broker.peer("a"))
        let second = try #require(try broker.peer("b", expectOpen: false))
        #expect(try second.frames() == refusal(ProtocolText.ipLimit("192.0.2.7")))
        broker.loop.run()
        #expect(!second.channel.isActive)
        _ = try broker.peer("c", from: "198.51.100.1")
        try first.channel.close().wait()
        broker.loop.run()  // the slot is freed by a callback on the channel's close future
        _ = try broker.peer("d")
        #expect(Set(broker.state.engine.peers(key: "peerjs")) == ["c", "d"])
    }

    @Test("--ip_limit behind a trusted proxy counts the forwarded client, and names it")
    func ipLimitProxied() throws {
        let broker = TestBroker(BrokerConfiguration(proxied: true, ipLimit: 1))
        func behindProxy(_ id: String, client: String) throws -> Rig {
            let rig = try #require(try broker.connect())
            rig.held.holding = false
            try rig.send(upgradeRequest("key=peerjs&id=\(id)&token=t", headers: "X-Forwarded-For: \(client)\r\n"))
            return rig
        }
        #expect(try behindProxy("a", client: "203.0.113.5").frames() == [.open])
        #expect(try behindProxy("b", client: "203.0.113.6").frames() == [.open])
        #expect(try behindProxy("c", client: "203.0.113.5").frames() == refusal(ProtocolText.ipLimit("203.0.113.5")))
    }

    @Test("--ip_handshake_limit: a connection past the address's unfinished handshakes is not admitted")
    func ipHandshakeLimit() throws {
        let broker = TestBroker(BrokerConfiguration(ipHandshakeLimit: 2))
        let first = try #require(try broker.connect())
        _ = try #require(try broker.connect())
        #expect(try broker.connect() == nil)
        #expect(try broker.connect(from: "198.51.100.1") != nil, "another address has its own count")
        first.held.holding = false
        try first.send(upgradeRequest("key=peerjs&id=a&token=t"))
        #expect(try broker.connect() != nil, "a finished handshake frees its place")
    }
}
