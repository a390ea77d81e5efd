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
            let expire = try await a.ws.nextJSON(timeout: .seconds(10))
            let elapsed = Stopwatch.milliseconds(since: start)
            #expect(expire == ["type": "EXPIRE", "src": .string(c), "dst": .string(a.id)])
            #expect(elapsed >= 4900, "EXPIRE after \(elapsed) ms; expected ≥ 5000 ms after the first message")
            #expect(
                elapsed <= 8000,
                "EXPIRE after \(elapsed) ms; expected ~5000–6000 ms (8000 allowed on a busy machine)"
            )
            try await a.ws.expectNoFrame(within: .milliseconds(1300))  // once, not once per message
            await a.ws.close()
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
    @Test("35 A→C while C is offline; C connects in time: OPEN, then the messages in order; A gets no EXPIRE")
    func deliveredOnConnect() async throws {
        let s = try Endpoint.current()
        guard let (a, late) = try await FastQueue.inTime("C's OPEN", {
            let a = try await s.register("a")
            let c = Unique.id("late")
            try await a.send(type: "OFFER", to: c, payload: ["n": 1])
            try await a.send(type: "CANDIDATE", to: c, payload: ["n": 2])
            try await a.send(type: "CANDIDATE", to: c, payload: ["n": 3])
            return (a, try await s.register(id: c))  // OPEN first
        }) else { return }
        for n in 1...3 {
            let got = try await late.ws.nextJSON()
            #expect(got["payload"] == ["n": .number(Double(n))] && got["src"] == .string(a.id), "message \(n): \(got)")
        }
        try await a.ws.expectNoFrame(within: .milliseconds(1500))  // past expire_timeout: no EXPIRE
        await a.ws.close()
        await late.ws.close()
    }

    /// Runs `messageThenRegister` (a sender registers and messages an offline id, which then
    /// registers) until the receiver's OPEN came within 900 ms of the try's start, up to 3 times.
    /// The tests' premise is "within expire_timeout (1000 ms)": under the parallel test load of a
    /// 2-core machine a process can be descheduled for a second, and a try whose premise did not
    /// hold proves nothing either way. Nil, with an issue recorded, when no try did.
    static func inTime(
        _ what: String, _ messageThenRegister: () async throws -> (sender: Peer, receiver: Peer)
    ) async throws -> (sender: Peer, receiver: Peer)? {
        let attempts = 3
        for attempt in 1...attempts {
            let start = Stopwatch.now
            let peers = try await messageThenRegister()
            let elapsed = Stopwatch.milliseconds(since: start)
            if elapsed < 900 { return peers }
            for ws in [peers.sender.ws, peers.receiver.ws] { await ws.close() }
            if attempt == attempts {
                Issue.record("\(what) came \(Int(elapsed)) ms after the try began in each of \(attempts) tries (expire_timeout 1000): the machine is too loaded to test this")
            }
        }
        return nil
    }

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
        // Keep sending every 100 ms for up to 3 s; a postponing server would never expire while this goes on.
        while Stopwatch.milliseconds(since: start) < 3000 {
            try await a.send(type: "CANDIDATE", to: c, payload: ["t": .number(Stopwatch.milliseconds(since: start))])
            if let frame = try? await a.ws.nextJSON(timeout: .milliseconds(100)) {
                #expect(frame == ["type": "EXPIRE", "src": .string(c), "dst": .string(a.id)])
                expireAt = Stopwatch.milliseconds(since: start)
                break
            }
        }
        let at = try #require(expireAt, "no EXPIRE within 3 s although messages kept coming: expiry was postponed")
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
        try await Task.sleep(for: .milliseconds(1500))  // the queue expires while A is offline
        let back = try await s.register(id: a.id, token: a.token)
        try await back.ws.expectNoFrame(within: .milliseconds(300))
        try await s.expectStillServing()
        await back.ws.close()
    }

    @Test("42 --expire_timeout/--cleanup_out_msgs set the timing: queue kept before, EXPIRE at ~1 s, then gone")
    func configuredTimings() async throws {
        let s = try Endpoint.current()
        guard let (a, keptPeer) = try await FastQueue.inTime("the kept peer's OPEN", {
            let a = try await s.register("a")
            let kept = Unique.id("kept")
            try await a.send(type: "OFFER", to: kept, payload: ["k": 1])
            try await Task.sleep(for: .milliseconds(200))
            return (a, try await s.register(id: kept))
        }) else { return }
        #expect(
            try await keptPeer.ws.nextJSON()["payload"] == ["k": 1],
            "queue must still exist 200 ms after the message"
        )

        let gone = Unique.id("gone")
        let start = Stopwatch.now
        try await a.send(type: "OFFER", to: gone, payload: ["g": 1])
        let expire = try await a.ws.nextJSON(timeout: .seconds(5))
        let elapsed = Stopwatch.milliseconds(since: start)
        #expect(expire == ["type": "EXPIRE", "src": .string(gone), "dst": .string(a.id)])
        #expect(elapsed >= 950 && elapsed <= 3000, "EXPIRE after \(elapsed) ms; expected ~1000–1100 ms")
        let late = try await s.register(id: gone)
        try await late.ws.expectNoFrame(within: .milliseconds(250))  // the expired queue is gone
        for ws in [a.ws, keptPeer.ws, late.ws] { await ws.close() }
    }

    @Test(
        "44 [DIFF] old fixed 5 s sweep",
        .disabled(
            "old 0.2.x server expired all pending messages at a fixed 5 s sweep; this server follows 1.x (36, 38, 42)"
        )
    )
    func oldSweep() {}
}
