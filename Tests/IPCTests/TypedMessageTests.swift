import IPC
import Testing

@Suite("Typed messages: each payload travels under its own frame type")
struct TypedMessageTests {
    /// One message type per frame type.
    static let messageTypes: [any IPCMessage.Type] = [
        BrokerSettings.self, BrokerReady.self, ConnectionHandoff.self, DrainRequest.self,
        BrokerReload.self, AuthChannelHandoff.self, AdmissionCredit.self, AuthQuery.self, AuthVerdict.self,
        PeerEventMessage.self, AuthReloadRequest.self, TLSChunk.self, TLSAck.self, AuthHelperSettings.self,
        ClusterChannelHandoff.self, ClusterSettings.self, ClusterClaim.self, ClusterAnswer.self, ClusterRelease.self,
        ClusterSend.self, ClusterDeliver.self, ClusterPeerChange.self, ClusterState.self, MetricsText.self,
    ]

    @Test("every frame type has exactly one message type")
    func oneMessagePerType() {
        let types = Self.messageTypes.map { $0.frameType }
        #expect(Set(types) == Set(FrameType.allCases))
        #expect(types.count == FrameType.allCases.count)
    }

    @Test("an encoded frame takes its type from the message")
    func encodedFrameType() throws {
        #expect(try EncodedFrame(sampleSettings).type == .hello)
        #expect(try EncodedFrame(BrokerReload(sampleSettings)).type == .reload)
        #expect(try EncodedFrame(BrokerReload(sampleSettings)).payload == sampleSettings.encode())
        let query = try EncodedFrame(AuthQuery(id: "a", token: "t", key: "k", ip: "::1", version: ""), requestID: 9)
        #expect(query.type == .authQuery && query.requestID == 9)
    }

    @Test("a frame decodes only as the message of its own type")
    func decodeChecksType() throws {
        let (supervisor, broker) = try HandoffChannel.pair(roles: (.supervisor, .broker))
        try supervisor.send(BrokerReload(sampleSettings))
        let frame = try receiveFrame(broker)
        #expect(errorCode { () throws(IPCError) in _ = try frame.decode(BrokerSettings.self) } == .invalidArgument)
        #expect(try frame.decode(BrokerReload.self).settings == sampleSettings)
    }

    @Test("messages with cheap checks refuse what the peer would refuse")
    func cheapChecks() throws {
        let long = AuthQuery(id: String(repeating: "i", count: AuthQuery.maxIDLength + 1), token: "", key: "", ip: "", version: "")
        #expect(errorCode { () throws(IPCError) in _ = try long.encodeChecked() } == .oversize)
        let chunk = TLSChunk(generation: 1, kind: .certificateChainPEM, index: 1, count: 1, data: [1])
        #expect(errorCode { () throws(IPCError) in _ = try chunk.encodeChecked() } == .oversize)
        let big = TLSChunk(generation: 1, kind: .privateKeyDER, index: 0, count: 1, data: [UInt8](repeating: 1, count: TLSChunk.maxDataLength + 1))
        #expect(errorCode { () throws(IPCError) in _ = try big.encodeChecked() } == .oversize)
        #expect(AuthChannelHandoff().encodeChecked().isEmpty && AuthReloadRequest().encode().isEmpty)
        #expect(errorCode { () throws(IPCError) in _ = try AuthReloadRequest(decoding: [0]) } == .malformedPayload)
    }
}
