import Foundation
import PeerJSTesting
import Testing

extension SharedServer {
    @Suite("Relay")
    struct Relay {
        @Test("24 A→B OFFER is relayed as {type, src: A, dst: B, payload} with the payload unchanged")
        func offer() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            try await a.send(type: "OFFER", to: b.id, payload: offerPayload)
            let got = try await b.ws.nextJSON()
            #expect(got == ["type": "OFFER", "src": .string(a.id), "dst": .string(b.id), "payload": offerPayload])
            #expect(got.keys == ["dst", "payload", "src", "type"])
            try await a.ws.expectNoFrame(within: .milliseconds(150))
            await a.ws.close()
            await b.ws.close()
        }

        @Test(
            "24b any JSON key order (the 1.x client sends type, payload, dst) and insignificant whitespace are accepted"
        )
        func keyOrderAndWhitespace() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            let texts = [
                #"{"type":"OFFER","payload":{"sdp":{"type":"offer","sdp":"v=0\r\n"},"connectionId":"dc_1"},"dst":"B"}"#,
                #"{"dst":"B","payload":{"x":1},"type":"OFFER"}"#,
                #"{"payload":{"x":2},"type":"ANSWER","dst":"B"}"#,
                "{\n  \"type\" : \"CANDIDATE\",\n  \"dst\" : \"B\",\n  \"payload\" : { \"x\" : [ 1, 2 ] }\n}\n",
                "\t{ \"type\":\"OFFER\" , \"dst\":\"B\", \"payload\":\"spaced\" } ",
            ]
            for text in texts {
                let message = try JSONValue.parse(text.replacingOccurrences(of: "\"B\"", with: "\"\(b.id)\""))
                try await a.ws.sendText(text.replacingOccurrences(of: "\"B\"", with: "\"\(b.id)\""))
                let got = try await b.ws.nextJSON()
                #expect(
                    got == [
                        "type": message["type"]!, "src": .string(a.id), "dst": .string(b.id),
                        "payload": message["payload"]!,
                    ],
                    "sent \(text)"
                )
            }
            await a.ws.close()
            await b.ws.close()
        }

        @Test("25 ANSWER and CANDIDATE are relayed too, and many messages A→B keep their order")
        func answerCandidateOrder() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            let answer: JSONValue = [
                "sdp": ["type": "answer", "sdp": "v=0\r\n"], "type": "data", "connectionId": "dc_1",
            ]
            let candidate: JSONValue = [
                "candidate": [
                    "candidate": "candidate:1 1 udp 2122260223 10.0.0.1 54321 typ host", "sdpMid": "0",
                    "sdpMLineIndex": 0, "usernameFragment": "abcd",
                ],
                "type": "data", "connectionId": "dc_1",
            ]
            try await b.send(type: "ANSWER", to: a.id, payload: answer)
            #expect(
                try await a.ws.nextJSON() == [
                    "type": "ANSWER", "src": .string(b.id), "dst": .string(a.id), "payload": answer,
                ]
            )
            try await b.send(type: "CANDIDATE", to: a.id, payload: candidate)
            #expect(
                try await a.ws.nextJSON() == [
                    "type": "CANDIDATE", "src": .string(b.id), "dst": .string(a.id), "payload": candidate,
                ]
            )

            let types = ["OFFER", "CANDIDATE", "ANSWER"]
            for n in 0..<30 {
                try await a.send(type: types[n % 3], to: b.id, payload: ["seq": .number(Double(n))])
            }
            for n in 0..<30 {
                let got = try await b.ws.nextJSON()
                #expect(
                    got["type"] == .string(types[n % 3]) && got["payload"] == ["seq": .number(Double(n))],
                    "message \(n): \(got)"
                )
            }
            await a.ws.close()
            await b.ws.close()
        }

        @Test("25b forty peers relay to each other concurrently: every message arrives once, in order per sender")
        func manyPeers() async throws {
            let s = try Endpoint.current()
            let count = 40
            let peers = try await withThrowingTaskGroup(of: Peer.self) { group in
                for index in 0..<count { group.addTask { try await s.register("m\(index)") } }
                return try await group.reduce(into: [Peer]()) { $0.append($1) }
            }
            // Each peer sends three messages to the next one in the ring, all at once.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, peer) in peers.enumerated() {
                    let next = peers[(index + 1) % count]
                    group.addTask {
                        for n in 0..<3 {
                            try await peer.send(type: "CANDIDATE", to: next.id, payload: ["n": .number(Double(n))])
                        }
                    }
                }
                try await group.waitForAll()
            }
            for (index, peer) in peers.enumerated() {
                let previous = peers[(index + count - 1) % count]
                for n in 0..<3 {
                    let got = try await peer.ws.nextJSON()
                    #expect(
                        got == [
                            "type": "CANDIDATE", "src": .string(previous.id), "dst": .string(peer.id),
                            "payload": ["n": .number(Double(n))],
                        ])
                }
            }
            for peer in peers { try await peer.ws.expectNoFrame(within: .milliseconds(5)) }
            for peer in peers { await peer.ws.close() }
        }

        @Test("26 a message claiming src Z is delivered with the sender's id as src")
        func srcIsNotSpoofable() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            try await a.ws.sendJSON(["type": "OFFER", "src": "Z", "dst": .string(b.id), "payload": ["x": 1]])
            #expect(try await b.ws.nextJSON()["src"] == .string(a.id))
            await a.ws.close()
            await b.ws.close()
        }

        @Test("27 extra top-level fields are not delivered")
        func extraFieldsDropped() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            try await a.ws.sendJSON([
                "type": "CANDIDATE", "dst": .string(b.id), "payload": ["c": 1], "extra": "drop me", "token": "secret",
                "nested": ["a": 1],
            ])
            let got = try await b.ws.nextJSON()
            #expect(got.keys == ["dst", "payload", "src", "type"], "\(got)")
            await a.ws.close()
            await b.ws.close()
        }

        @Test("28 HEARTBEAT produces no frame to anyone and the connection stays open")
        func heartbeatIsSilent() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            try await a.heartbeat()
            try await a.ws.sendJSON(["type": "HEARTBEAT", "dst": .string(b.id)])
            try await a.ws.expectNoFrame(within: .milliseconds(250))
            try await b.ws.expectNoFrame(within: .milliseconds(50))
            try await a.send(type: "OFFER", to: b.id, payload: ["after": "heartbeat"])
            #expect(try await b.ws.nextJSON()["payload"] == ["after": "heartbeat"])
            await a.ws.close()
            await b.ws.close()
        }

        @Test("29 unknown types (FOO, OPEN, ERROR, ID-TAKEN) are ignored: nothing delivered, connection open")
        func unknownTypesIgnored() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            for type in ["FOO", "OPEN", "ERROR", "ID-TAKEN", "offer", ""] {
                try await a.send(type: type, to: b.id, payload: ["t": .string(type)])
            }
            try await a.ws.sendJSON(["dst": .string(b.id), "payload": "no type"])
            try await a.ws.sendJSON(["type": 42, "dst": .string(b.id)])
            try await b.ws.expectNoFrame(within: .milliseconds(250))
            try await a.ws.expectNoFrame(within: .milliseconds(50))
            try await a.send(type: "OFFER", to: b.id, payload: ["still": "open"])
            #expect(try await b.ws.nextJSON()["payload"] == ["still": "open"])
            await a.ws.close()
            await b.ws.close()
        }

        @Test("30 non-JSON text and non-JSON binary frames are ignored; the connection stays open")
        func garbageIgnored() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            try await a.ws.sendText("this is not JSON {")
            try await a.ws.sendText("[1,2,3]")
            try await a.ws.sendText("\"just a string\"")
            try await a.ws.sendBinary([0xff, 0x00, 0xfe, 0x01, 0x80])
            try await a.ws.expectNoFrame(within: .milliseconds(250))
            try await a.send(type: "OFFER", to: b.id, payload: ["after": "garbage"])
            #expect(try await b.ws.nextJSON()["payload"] == ["after": "garbage"])
            await a.ws.close()
            await b.ws.close()
        }

        @Test("30b (E3) a binary frame holding a JSON message is relayed like a text frame")
        func binaryJSONRelayed() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            let message: JSONValue = ["type": "OFFER", "dst": .string(b.id), "payload": ["bin": true]]
            try await a.ws.sendBinary(Array(message.jsonString.utf8))
            let got = try await b.ws.nextMessage()
            guard case .text = got else {
                Issue.record("the server must send text frames only, got \(got)")
                return
            }
            #expect(
                try JSONValue.parse(frameText(got)) == [
                    "type": "OFFER", "src": .string(a.id), "dst": .string(b.id), "payload": ["bin": true],
                ]
            )
            await a.ws.close()
            await b.ws.close()
        }

        @Test("32 LEAVE A→B is delivered when B is connected, and dropped (not queued) when B is offline")
        func leave() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let b = try await s.register("b")
            try await a.send(type: "LEAVE", to: b.id)
            #expect(try await b.ws.nextJSON() == ["type": "LEAVE", "src": .string(a.id), "dst": .string(b.id)])
            let offline = Unique.id("off")
            try await a.send(type: "LEAVE", to: offline)
            let late = try await s.register(id: offline)
            try await late.ws.expectNoFrame(within: .milliseconds(250))
            for ws in [a.ws, b.ws, late.ws] { await ws.close() }
        }

        // E2 (PROTOCOL.md §14): the server also closes the socket that sent LEAVE without dst.
        @Test("33 (E2) LEAVE without dst unregisters the sender and the server closes its socket; the id is free")
        func leaveWithoutDst() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            try await a.ws.sendJSON(["type": "LEAVE"])
            let info = try await a.ws.waitForClose()
            #expect(info.code == nil, "server-initiated close carries no status code (E4): \(info)")
            #expect(try await s.waitForPeers { !$0.contains(a.id) }, "LEAVE without dst must unregister the sender")
            let other = try await s.register(id: a.id, token: "any-other-token")
            await other.ws.close()
        }
    }
}
