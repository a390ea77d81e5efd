import Foundation
import IPC
import Testing

/// The fuzz-ipc seeds are hand-made bytes: when a message's encoding changes they go stale in
/// silence (the fuzzer still runs, on inputs that no longer reach past the first field). Each
/// seed named `payload-*` or `record-*` must decode as what its selector byte says it is.
@Suite("fuzz-ipc seeds decode as their selector says")
struct FuzzSeedTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus/fuzz-ipc")

    static var seeds: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasPrefix("payload-") || $0.hasPrefix("record-") }.sorted()
    }

    @Test("the corpus has a payload seed for every frame type")
    func everyTypeSeeded() throws {
        var seeded: Set<FrameType> = []
        for name in Self.seeds where name.hasPrefix("payload-") {
            let bytes = try [UInt8](Data(contentsOf: Self.directory.appendingPathComponent(name)))
            seeded.insert(try #require(Self.payloadType(selector: bytes[0])))
        }
        #expect(seeded == Set(FrameType.allCases))
    }

    @Test("the cluster-records seed (selector 0x11) parses into records that encode back to it")
    func clusterRecords() throws {
        let bytes = try [UInt8](Data(contentsOf: Self.directory.appendingPathComponent("cluster-records")))
        #expect(bytes.first == 0x11)
        let records = try #require(ClusterRecord.parse(bytes.dropFirst()))
        #expect(records.count == 5)
        #expect(records.flatMap(\.encoded) == Array(bytes.dropFirst()))
    }

    @Test("each seed decodes", arguments: seeds)
    func decodes(name: String) throws {
        let bytes = try [UInt8](Data(contentsOf: Self.directory.appendingPathComponent(name)))
        let selector = try #require(bytes.first)
        let input = Array(bytes.dropFirst())
        if name.hasPrefix("record-") {
            #expect(selector & 0x0F == 0, "a record seed has reader 0")
            let (header, payload) = try FrameCodec.decode(record: input, fdAttached: selector & 0x10 != 0, roles: nil)
            try Self.decode(payload, as: header.type)
        } else {
            try Self.decode(input, as: try #require(Self.payloadType(selector: selector)))
        }
    }

    /// The harness's mapping (Sources/Fuzz/fuzz-ipc/FuzzIPC.swift).
    static func payloadType(selector: UInt8) -> FrameType? {
        let reader = Int(selector & 0x0F)
        guard (2...14).contains(reader) else { return nil }
        let types = FrameType.allCases
        return types[(Int(selector >> 4) * 13 + reader - 2) % types.count]
    }

    static func decode(_ payload: [UInt8], as type: FrameType) throws {
        switch type {
        case .hello: _ = try BrokerSettings(decoding: payload)
        case .reload: _ = try BrokerReload(decoding: payload)
        case .ready: _ = try BrokerReady(decoding: payload)
        case .authChannel: _ = try AuthChannelHandoff(decoding: payload)
        case .authReload: _ = try AuthReloadRequest(decoding: payload)
        case .authHello: _ = try AuthHelperSettings(decoding: payload)
        case .connection: _ = try ConnectionHandoff(decoding: payload)
        case .drain: _ = try DrainRequest(decoding: payload)
        case .credit: _ = try AdmissionCredit(decoding: payload)
        case .authQuery: _ = try AuthQuery(decoding: payload)
        case .authVerdict: _ = try AuthVerdict(decoding: payload)
        case .peerEvent: _ = try PeerEventMessage(decoding: payload)
        case .tlsChunk: _ = try TLSChunk(decoding: payload)
        case .tlsAck: _ = try TLSAck(decoding: payload)
        case .clusterChannel: _ = try ClusterChannelHandoff(decoding: payload)
        case .clusterHello: _ = try ClusterSettings(decoding: payload)
        case .clusterClaim: _ = try ClusterClaim(decoding: payload)
        case .clusterAnswer: _ = try ClusterAnswer(decoding: payload)
        case .clusterRelease: _ = try ClusterRelease(decoding: payload)
        case .clusterSend: _ = try ClusterSend(decoding: payload)
        case .clusterDeliver: _ = try ClusterDeliver(decoding: payload)
        case .clusterPeer: _ = try ClusterPeerChange(decoding: payload)
        case .clusterState: _ = try ClusterState(decoding: payload)
        case .metrics: _ = try MetricsText(decoding: payload)
        }
    }
}
