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
            (.reload, 6, .supervisor, .broker, false),
            (.authChannel, 7, .supervisor, .broker, true),
            (.credit, 8, .broker, .supervisor, false),
            (.authQuery, 16, .broker, .auth, false),
            (.authVerdict, 17, .auth, .broker, false),
            (.peerEvent, 18, .broker, .auth, false),
            (.authReload, 19, .supervisor, .auth, false),
            (.tlsChunk, 32, .supervisor, .broker, false),
            (.tlsAck, 33, .broker, .supervisor, false),
            (.authHello, 20, .supervisor, .auth, false),
            (.clusterChannel, 9, .supervisor, .broker, true),
            (.clusterHello, 40, .supervisor, .cluster, false),
            (.clusterClaim, 41, .broker, .cluster, false),
            (.clusterAnswer, 42, .cluster, .broker, false),
            (.clusterRelease, 43, .broker, .cluster, false),
            (.clusterSend, 44, .broker, .cluster, false),
            (.clusterDeliver, 45, .cluster, .broker, false),
            (.clusterPeer, 46, .cluster, .broker, false),
            (.clusterState, 47, .cluster, .broker, false),
            (.metrics, 11, .broker, .supervisor, false),
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

    @Test("phase and answer columns are the documented ones")
    func phasesAndAnswers() {
        let expected: [(FrameType, FramePhase, FrameType?)] = [
            (.hello, .opening, .ready),
            (.ready, .opening, nil),
            (.connection, .afterOpening, nil),
            (.drain, .afterOpening, nil),
            (.reload, .afterOpening, nil),
            (.authChannel, .anyTime, nil),
            (.credit, .afterOpening, nil),
            (.authQuery, .anyTime, .authVerdict),
            (.authVerdict, .anyTime, nil),
            (.peerEvent, .anyTime, nil),
            (.authReload, .afterOpening, nil),
            (.tlsChunk, .anyTime, .tlsAck),
            (.tlsAck, .anyTime, nil),
            (.authHello, .opening, nil),
            (.clusterChannel, .anyTime, nil),
            (.clusterHello, .opening, nil),
            (.clusterClaim, .anyTime, .clusterAnswer),
            (.clusterAnswer, .anyTime, nil),
            (.clusterRelease, .anyTime, nil),
            (.clusterSend, .anyTime, nil),
            (.clusterDeliver, .anyTime, nil),
            (.clusterPeer, .anyTime, nil),
            (.clusterState, .anyTime, nil),
            (.metrics, .afterOpening, nil),
        ]
        #expect(expected.count == FrameType.allCases.count)
        for (type, phase, answer) in expected {
            #expect(type.phase == phase, "\(type.name)")
            #expect(type.answer == answer, "\(type.name)")
        }
    }

    @Test("every answer travels the reverse way of its question, answers one question and asks none")
    func answersAreConsistent() {
        for question in FrameType.allCases {
            guard let answer = question.answer else { continue }
            #expect(answer.sender == question.receiver && answer.receiver == question.sender, "\(question.name) → \(answer.name)")
            #expect(answer.answer == nil, "\(answer.name) answers \(question.name) and asks a question itself")
            #expect(answer.question == question)
            #expect(FrameType.allCases.filter { $0.answer == answer }.count == 1, "\(answer.name) answers more than one question")
        }
        for type in FrameType.allCases where type.question != nil {
            #expect(type.question?.answer == type)
        }
    }

    @Test("each direction has at most one opening frame, and every after-opening frame has one")
    func phasesAreConsistent() {
        for type in FrameType.allCases {
            let sameWay = FrameType.allCases.filter { $0.sender == type.sender && $0.receiver == type.receiver }
            let openings = sameWay.filter { $0.phase == .opening }
            #expect(openings.count <= 1, "\(type.sender) → \(type.receiver) has \(openings.count) opening frames")
            if type.phase == .afterOpening {
                #expect(openings.count == 1, "\(type.name) waits for an opening frame its direction does not have")
            }
            if type.phase == .opening {
                #expect(!type.carriesFD, "\(type.name) opens a channel and must not carry a descriptor")
            }
        }
    }

    @Test("no type uses a retired number (5 was stats)")
    func retiredNumbers() {
        #expect(FrameType.retiredRawValues.contains(5))
        #expect(FrameType(rawValue: 5) == nil)
        for type in FrameType.allCases {
            #expect(!FrameType.retiredRawValues.contains(type.rawValue), "\(type.name) uses retired number \(type.rawValue)")
        }
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
        #expect(ConnectionHandoff(peer: sampleV6, tls: true).encodeChecked().count <= FrameType.connection.maxPayload)
        #expect(DrainRequest(deadlineMs: 1).encode().count <= FrameType.drain.maxPayload)
        #expect(BrokerReady().encode().count <= FrameType.ready.maxPayload)
    }
}
