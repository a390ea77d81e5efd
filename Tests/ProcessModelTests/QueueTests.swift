import Foundation
import PeerJSTesting
import Testing

extension SharedServer {
    @Suite("Offline queue, default timings")
    struct DefaultQueue {
        @Test("36 A→C with C never connecting: one EXPIRE {src C, dst A} 5–6 s after the first message, however many")
        func expireOnceWithDefaults() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let c = Unique.id("never")
            let start = Stopwatch.now
            for n in 0..<3 {
                try await a.send(type: "OFFER", to: c, payload: ["n": .number(Double(n))])
                try await Task.sleep(for: .milliseconds(300))
            }
            let expire = try await a.ws.nextJSON(timeout: .seconds(15))
            let elapsed = Stopwatch.milliseconds(since: start)
            #expect(expire == ["type": "EXPIRE", "src": .string(c), "dst": .string(a.id)])
            #expect(elapsed >= 4900, "EXPIRE after \(elapsed) ms; expected ≥ 5000 ms after the first message")
            #expect(
                elapsed <= 10000,
                "EXPIRE after \(elapsed) ms; expected ~5000–6000 ms (10000 allowed on a busy machine)"
            )
            try await a.ws.expectNoFrame(within: .milliseconds(1300))  // once, not once per message
            await a.ws.close()
        }

        @Test("35 A→C while C is offline; C connects 200 ms later, well inside the default expire_timeout (5000 ms): OPEN, then the messages in order; A gets no EXPIRE")
        func deliveredOnConnect() async throws {
            let s = try Endpoint.current()
            let a = try await s.register("a")
            let c = Unique.id("late")
            try await a.send(type: "OFFER", to: c, payload: ["n": 1])
            try await a.send(type: "CANDIDATE", to: c, payload: ["n": 2])
            try await a.send(type: "CANDIDATE", to: c, payload: ["n": 3])
            try await Task.sleep(for: .milliseconds(200))  // the queue is kept, not only the last instant's messages
            let late = try await s.register(id: c)  // OPEN first
            for n in 1...3 {
                let got = try await late.ws.nextJSON()
                #expect(got["payload"] == ["n": .number(Double(n))] && got["src"] == .string(a.id), "message \(n): \(got)")
            }
            try await a.ws.expectNoFrame(within: .milliseconds(6000))  // past expire_timeout and one sweep: no EXPIRE
            await a.ws.close()
            await late.ws.close()
        }

        @Test("43 messages for an id whose socket closed normally are delivered when it re-registers before expiry")
        func queuedAfterNormalClose() async throws {
            let s = try Endpoint.current()
            let c = try await s.register("c")
            await c.ws.close()
            #expect(try await s.waitForPeers { !$0.contains(c.id) })
            let a = try await s.register("a")
            try await a.send(type: "OFFER", to: c.id, payload: ["q": 1])
            try await a.send(type: "CANDIDATE", to: c.id, payload: ["q": 2])
            let back = try await s.register(id: c.id, token: c.token)  // expects OPEN first
            #expect(
                try await back.ws.nextJSON() == [
                    "type": "OFFER", "src": .string(a.id), "dst": .string(c.id), "payload": ["q": 1],
                ]
            )
            #expect(
                try await back.ws.nextJSON() == [
                    "type": "CANDIDATE", "src": .string(a.id), "dst": .string(c.id), "payload": ["q": 2],
                ]
            )
            await a.ws.close()
            await back.ws.close()
        }
    }
}

/// `--expire_timeout 1000 --cleanup_out_msgs 20`: queue timings small enough to test in about a second.
@Suite(
    "Offline queue, --expire_timeout 1000 --cleanup_out_msgs 20",
    .disabled(if: ServerFixture.isExternal, needsOwnServer),
    .peerServer("--expire_timeout", "1000", "--cleanup_out_msgs", "20", "--allow_discovery")
)
struct FastQueue {
    @Test("37 messages from A and from D to offline C: A and D each get one EXPIRE")
    func expireToEverySender() async throws {
        let s = try Endpoint.current()
        let a = try await s.register("a")
        let d = try await s.register("d")
        let c = Unique.id("gone")
        try await a.send(type: "OFFER", to: c, payload: ["from": "a"])
        try await d.send(type: "OFFER", to: c, payload: ["from": "d"])
        try await a.send(type: "CANDIDATE", to: c, payload: ["from": "a"])
        #expect(
            try await a.ws.nextJSON(timeout: .seconds(5)) == [
                "type": "EXPIRE", "src": .string(c), "dst": .string(a.id),
            ]
        )
        #expect(
            try await d.ws.nextJSON(timeout: .seconds(5)) == [
                "type": "EXPIRE", "src": .string(c), "dst": .string(d.id),
            ]
        )
        try await a.ws.expectNoFrame(within: .milliseconds(300))
        try await d.ws.expectNoFrame(within: .milliseconds(50))
        await a.ws.close()
        await d.ws.close()
    }

    @Test("38 further messages to C do not postpone the expiry of the first")
    func expiryNotPostponed() async throws {
        let s = try Endpoint.current()
        let a = try await s.register("a")
        let c = Unique.id("gone")
        let start = Stopwatch.now
        var expireAt: Double?
        // Keep sending every 100 ms for up to 6 s; a postponing server would never expire while this goes on.
        while Stopwatch.milliseconds(since: start) < 6000 {
            try await a.send(type: "CANDIDATE", to: c, payload: ["t": .number(Stopwatch.milliseconds(since: start))])
            if let frame = try? await a.ws.nextJSON(timeout: .milliseconds(100)) {
                #expect(frame == ["type": "EXPIRE", "src": .string(c), "dst": .string(a.id)])
                expireAt = Stopwatch.milliseconds(since: start)
                break
            }
        }
        let at = try #require(expireAt, "no EXPIRE within 6 s although messages kept coming: expiry was postponed")
        #expect(at >= 950, "EXPIRE after \(at) ms, before expire_timeout 1000")
        await a.ws.close()
    }

    @Test("39 LEAVE and EXPIRE to an offline id are not queued")
    func leaveAndExpireNotQueued() async throws {
        let s = try Endpoint.current()
        let a = try await s.register("a")
        let c = Unique.id("off")
        try await a.send(type: "LEAVE", to: c)
        try await a.send(type: "EXPIRE", to: c)
        let late = try await s.register(id: c)
        try await late.ws.expectNoFrame(within: .milliseconds(250))
        await late.ws.close()
        try await a.ws.expectNoFrame(within: .milliseconds(1300))  // nothing queued, so nothing expires
        await a.ws.close()
    }

    @Test("40 (E6) a message with missing, empty or null dst is not queued and produces nothing")
    func noDestination() async throws {
        let s = try Endpoint.current()
        let a = try await s.register("a")
        try await a.ws.sendJSON(["type": "OFFER", "payload": ["no": "dst"]])
        try await a.ws.sendJSON(["type": "OFFER", "dst": "", "payload": ["empty": "dst"]])
        try await a.ws.sendJSON(["type": "ANSWER", "dst": nil, "payload": ["null": "dst"]])
        try await a.ws.expectNoFrame(within: .milliseconds(1300))
        try await s.expectStillServing(survivor: a)
        await a.ws.close()
    }

    @Test("41 EXPIRE for a sender who has gone offline is dropped (not queued for it)")
    func expireForOfflineSender() async throws {
        let s = try Endpoint.current()
        let a = try await s.register("a")
        try await a.send(type: "OFFER", to: Unique.id("gone"), payload: ["x": 1])
        await a.ws.close()
        #expect(try await s.waitForPeers { !$0.contains(a.id) })
        // The queue expires while A is offline. A later queue's EXPIRE says when: queues expire
        // in the order they were made, so once W has its EXPIRE, A's has been dropped.
        let w = try await s.register("w")
        try await w.send(type: "OFFER", to: Unique.id("gone"), payload: ["w": 1])
        #expect(try await w.ws.nextJSON(timeout: .seconds(10))["type"] == "EXPIRE")
        await w.ws.close()
        let back = try await s.register(id: a.id, token: a.token)
        try await back.ws.expectNoFrame(within: .milliseconds(300))
        try await s.expectStillServing()
        await back.ws.close()
    }

    @Test("42 --expire_timeout/--cleanup_out_msgs set the timing: EXPIRE at ~1 s, then the queue is gone (35 shows it kept before)")
    func configuredTimings() async throws {
        let s = try Endpoint.current()
        let a = try await s.register("a")
        let gone = Unique.id("gone")
        let start = Stopwatch.now
        try await a.send(type: "OFFER", to: gone, payload: ["g": 1])
        let expire = try await a.ws.nextJSON(timeout: .seconds(8))
        let elapsed = Stopwatch.milliseconds(since: start)
        #expect(expire == ["type": "EXPIRE", "src": .string(gone), "dst": .string(a.id)])
        #expect(elapsed >= 950 && elapsed <= 6000, "EXPIRE after \(elapsed) ms; expected ~1000–1100 ms (6000 allowed on a busy machine)")
        let late = try await s.register(id: gone)
        try await late.ws.expectNoFrame(within: .milliseconds(250))  // the expired queue is gone
        for ws in [a.ws, late.ws] { await ws.close() }
    }
}
