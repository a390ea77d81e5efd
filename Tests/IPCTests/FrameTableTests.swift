import IPC
import Testing

@Suite("Frame table")
struct FrameTableTests {
    @Test("raw values, directions and fd flags are the documented ones")
    func table() {
        let expected: [(FrameType, UInt16, Role, Role, Bool)] = [
            (.hello, 1, .supervisor, .broker, false),
            (.ready, 2, .broker, .supervisor, false),
            (.connection, 3, .supervisor, .broker, true),
            (.drain, 4, .supervisor, .broker, false),
            (.stats, 5, .broker, .supervisor, false),
            (.reload, 6, .supervisor, .broker, false),
            (.authChannel, 7, .supervisor, .broker, true),
            (.credit, 8, .broker, .supervisor, false),
            (.authQuery, 16, .broker, .auth, false),
            (.authVerdict, 17, .auth, .broker, false),
            (.peerEvent, 18, .broker, .auth, false),
            (.authReload, 19, .supervisor, .auth, false),
            (.tlsChunk, 32, .supervisor, .broker, false),
            (.tlsAck, 33, .broker, .supervisor, false),
        ]
        #expect(expected.count == FrameType.allCases.count)
        for (type, raw, sender, receiver, fd) in expected {
            #expect(type.rawValue == raw)
            #expect(type.sender == sender)
            #expect(type.receiver == receiver)
            #expect(type.carriesFD == fd)
        }
        #expect(FrameType.hello.maxPayload == 32 * 1024)
        #expect(FrameType.reload.maxPayload == FrameType.hello.maxPayload)
        #expect(FrameType.ready.maxPayload == 0)
        #expect(FrameType.connection.maxPayload == 512)
    }

    @Test("every cap is at most 64 KiB and names are unique")
    func capsAndNames() {
        for type in FrameType.allCases {
            #expect(type.maxPayload >= 0 && type.maxPayload <= FrameType.maxPayloadCap)
            #expect(type.sender != type.receiver)
        }
        #expect(Set(FrameType.allCases.map(\.name)).count == FrameType.allCases.count)
    }

    @Test("each typed message fits its frame type's cap at its field limits")
    func messagesFitCaps() throws {
        let longest = BrokerSettings(
            key: String(repeating: "k", count: BrokerSettings.maxKeyLength),
            path: String(repeating: "p", count: BrokerSettings.maxPathLength),
            expireTimeoutMs: 0, aliveTimeoutMs: 0, cleanupIntervalMs: 0, concurrentLimit: 0,
            allowDiscovery: false, proxied: false,
            corsOrigins: Array(repeating: String(repeating: "o", count: 200), count: BrokerSettings.maxCorsOrigins),
            maxMessageBytes: 0, handshakeTimeoutMs: 0,
            extraKeys: Array(repeating: String(repeating: "x", count: BrokerSettings.maxExtraKeyLength), count: BrokerSettings.maxExtraKeys),
            trustedProxies: Array(repeating: String(repeating: "f", count: BrokerSettings.maxTrustedProxyLength), count: BrokerSettings.maxTrustedProxies))
        #expect(try longest.encodeChecked().count <= FrameType.hello.maxPayload)
        #expect(AdmissionCredit(count: .max).encode().count <= FrameType.credit.maxPayload)
        let longestAck = TLSAck.refused(generation: .max, reason: String(repeating: "é", count: TLSAck.maxReasonLength))
        #expect(longestAck.reason.utf8.count <= TLSAck.maxReasonLength)
        #expect(try longestAck.encodeChecked().count <= FrameType.tlsAck.maxPayload)
        let handoff = ConnectionHandoff(
            peer: sampleV6, listenerName: String(repeating: "l", count: ConnectionHandoff.maxListenerNameLength), tls: true)
        #expect(try handoff.encodeChecked().count <= FrameType.connection.maxPayload)
        #expect(DrainRequest(deadlineMs: 1).encode().count <= FrameType.drain.maxPayload)
        #expect(BrokerStats(registeredPeers: 1, openConnections: 2, queuedMessages: 3).encode().count <= FrameType.stats.maxPayload)
        #expect(BrokerReady().encode().count <= FrameType.ready.maxPayload)
    }
}
