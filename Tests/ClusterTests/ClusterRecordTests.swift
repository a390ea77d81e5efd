import IPC
import Testing

@Suite("Cluster notification records")
struct ClusterRecordTests {
    @Test("every record survives its encoding, several in one payload, ids with spaces and colons included")
    func roundTrip() throws {
        let records: [ClusterRecord] = [
            .registered(instance: "a-1", key: "peerjs", id: "id with: colon"),
            .released(instance: "a-1", key: "peerjs", id: "x"),
            .message(instance: "b.2", key: "k", id: "alice", source: "bob", frame: Array(#"{"type":"OFFER","payload":"é\n"}"#.utf8)),
            .stored(seq: 123_456_789),
            .moved(instance: "c", key: "peerjs", id: "alice"),
            .ping(nonce: 42),
        ]
        let payload = records.flatMap(\.encoded)
        #expect(ClusterRecord.parse(payload) == records)
        #expect(ClusterRecord.parse([UInt8]()) == [])
        #expect(ClusterRecord.parse(Array("i1:0p1:0".utf8)) == [.ping(nonce: 0), .stored(seq: 0)])
    }

    @Test("malformed payloads are refused whole: unknown tags, bad lengths, truncation, huge lengths, bad UTF-8")
    func malformed() {
        let good = ClusterRecord.registered(instance: "a", key: "k", id: "i").encoded
        for bad: [UInt8] in [
            Array("?1:a".utf8), Array("+1:a1:k".utf8), Array("+1:a1:k9:i".utf8), Array("+:a1:k1:i".utf8),
            Array("+1234567:a".utf8), Array("+1a:".utf8), Array("p2:-1".utf8), Array("p25:99999999999999999999999".utf8),
            [UInt8(ascii: "+"), UInt8(ascii: "1"), UInt8(ascii: ":"), 0xFF] + Array("1:k1:i".utf8),
            good + Array("x".utf8),
            // Non-canonical numbers would parse into records that encode differently (fuzz-ipc
            // found `i2:02`): leading zeros in a length or a number, a sign.
            Array("i2:02".utf8), Array("+01:a1:k1:i".utf8), Array("p2:+5".utf8), Array("i0:".utf8),
            Array(#"+1:a6:peerjs5:alicem1:b6:peerjs5:alice3:bob2:{Lp3:123x1:c6:peerjs3:boyi2:02"#.utf8),
        ] {
            #expect(ClusterRecord.parse(bad) == nil, "\(String(decoding: bad, as: UTF8.self))")
        }
    }

    @Test("only valid UTF-8 without NUL travels as NOTIFY text")
    func notifiable() {
        #expect(ClusterRecord.isNotifiable(Array("plain é".utf8)))
        #expect(!ClusterRecord.isNotifiable([0x61, 0x00]))
        #expect(!ClusterRecord.isNotifiable([0xC3]))
    }

    @Test("the cluster IPC messages survive their encoding and refuse what is out of range")
    func messages() throws {
        let settings = ClusterSettings(
            process: ChildSettings(logLevel: "info", user: "_peerjs-cluster"), addresses: ["127.0.0.1", "::1"], port: 5432,
            user: "peerjs", database: "peerjs", password: "secret", instance: "host-abc123", expirySeconds: 30)
        #expect(try ClusterSettings(decoding: settings.encodeChecked()) == settings)
        var bad = settings
        bad.instance = "bad name"
        #expect(throws: IPCError.self) { try ClusterSettings(decoding: bad.encode()) }
        let relay = ClusterRelay(instance: "b", key: "peerjs", id: "alice", source: "bob", frame: Array("{}".utf8))
        #expect(try ClusterSend(decoding: ClusterSend(relay).encodeChecked()) == ClusterSend(relay))
        #expect(try ClusterDeliver(decoding: ClusterDeliver(relay).encodeChecked()) == ClusterDeliver(relay))
        #expect(throws: IPCError.self) { try ClusterAnswer(decoding: [9]) }
        #expect(throws: IPCError.self) { try ClusterPeerChange(decoding: [9, 0, 0, 0, 0, 0, 0]) }
        #expect(ClusterSettings.isValidInstance("a.b-c_d9"))
        #expect(!ClusterSettings.isValidInstance(""))
        #expect(!ClusterSettings.isValidInstance(String(repeating: "a", count: 41)))
    }
}
