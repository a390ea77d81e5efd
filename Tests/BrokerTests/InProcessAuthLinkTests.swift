import IPC
import Logging
import NIOCore
import NIOPosix
import PeerProtocol
import Synchronization
import Testing

@testable import Broker

/// PeerJSKit's auth hook behind ``AuthClient``: closures in tasks, answers hopping back to a real
/// event loop (an `EmbeddedEventLoop` cannot take tasks from other threads).
@Suite("The in-process auth link (PeerJSKit's hook)")
struct InProcessAuthLinkTests {
    static func query(_ id: String, _ n: UInt64) -> AuthorizationQuery {
        AuthorizationQuery(connection: ConnectionID(n), id: id, token: "t", key: "peerjs", ip: "192.0.2.1", version: "")
    }

    @Test("at most maxInFlight hooks run, then questions wait (their deadline running); a hung hook is cancelled at its deadline and frees its place; an answer is the verdict")
    func saturationAndDeadline() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let answers = Mutex<[String: AuthorizationAnswer]>([:])
        let cancelled = Mutex(0)
        let link = try await loop.submit {
            // 2 s: the quick hook runs on the shared cooperative pool, which a loaded machine may not
            // get to within a shorter deadline.
            let auth = AuthClient(loop: loop, timeoutMs: 2000, logger: TestBroker.quiet) { query, answer in
                answers.withLock { $0[query.id] = answer }
            }
            let link = InProcessAuthLink(loop: loop, maxInFlight: 2) { query in
                if query.id == "quick" { return .deny("no \(query.token)") }
                do { try await Task.sleep(for: .seconds(3600)) } catch { cancelled.withLock { $0 += 1 } }
                return .allow  // after its deadline: ignored
            }
            link.generation = auth.attach(link: link)
            link.auth = auth
            for (n, id) in ["slow1", "slow2", "queued"].enumerated() {
                #expect(auth.ask(Self.query(id, UInt64(n + 1))) == nil, "\(id) was answered at once")
            }
            #expect(link.inFlight == 2 && auth.held == 1, "the third question should wait for a place")
            return NIOLoopBound((link, auth), eventLoop: loop)
        }.get()

        let deadline = ContinuousClock.now + .seconds(20)
        while answers.withLock({ $0.count }) < 3 || cancelled.withLock({ $0 }) < 2 {
            try #require(ContinuousClock.now < deadline, "answers so far: \(answers.withLock { $0 }), cancelled: \(cancelled.withLock { $0 })")
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(answers.withLock { $0 } == ["slow1": .timedOut, "slow2": .timedOut, "queued": .timedOut])
        let (inFlight, waiting) = try await loop.submit { (link.value.0.inFlight, link.value.1.waiting) }.get()
        #expect(inFlight == 0 && waiting == 0, "the hung hooks still hold their places")

        // The places are free again: a hook that answers gives the verdict.
        try await loop.submit { #expect(link.value.1.ask(Self.query("quick", 4)) == nil) }.get()
        while answers.withLock({ $0["quick"] }) == nil {
            try #require(ContinuousClock.now < deadline, "no verdict for quick")
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(answers.withLock { $0["quick"] } == .deny("no t"))
    }

    @Test("after cancelAll (shutdown) a question is denied without running the hook")
    func closed() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let answers = Mutex<[AuthorizationAnswer]>([])
        let ran = Mutex(0)
        let kept = try await loop.submit {
            let auth = AuthClient(loop: loop, timeoutMs: 5000, logger: TestBroker.quiet) { _, answer in answers.withLock { $0.append(answer) } }
            let link = InProcessAuthLink(loop: loop) { _ in
                ran.withLock { $0 += 1 }
                return .allow
            }
            link.generation = auth.attach(link: link)
            link.auth = auth
            link.cancelAll()
            #expect(auth.ask(Self.query("late", 1)) == nil)
            return NIOLoopBound((link, auth), eventLoop: loop)
        }.get()
        let deadline = ContinuousClock.now + .seconds(10)
        while answers.withLock({ $0.isEmpty }) {
            try #require(ContinuousClock.now < deadline)
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(answers.withLock { $0 } == [.deny("")])
        #expect(ran.withLock { $0 } == 0)
        _ = kept
    }
}

@Suite("The in-process auth link: hooks that ignore cancellation")
struct InProcessAuthLinkTaskCapTests {
    @Test("a hook that ignores its cancellation keeps its task; past maxTasks the link is full until tasks end")
    func taskCap() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let answers = Mutex<[String: AuthorizationAnswer]>([:])
        let gate = Gate()
        let kept = try await loop.submit {
            let auth = AuthClient(loop: loop, timeoutMs: 100, logger: TestBroker.quiet) { query, answer in
                answers.withLock { $0[query.id] = answer }
            }
            let link = InProcessAuthLink(loop: loop, maxInFlight: 10, maxTasks: 2) { query in
                if query.id.hasPrefix("stubborn") { await gate.wait() }  // deaf to cancellation
                return .allow
            }
            link.generation = auth.attach(link: link)
            link.auth = auth
            for (n, id) in ["stubborn1", "stubborn2"].enumerated() {
                #expect(auth.ask(InProcessAuthLinkTests.query(id, UInt64(n + 1))) == nil)
            }
            return NIOLoopBound((link, auth), eventLoop: loop)
        }.get()
        let deadline = ContinuousClock.now + .seconds(20)
        while answers.withLock({ $0.count }) < 2 {
            try #require(ContinuousClock.now < deadline)
            try await Task.sleep(for: .milliseconds(10))
        }
        // Both timed out, their places are free, but their tasks live: a new question must wait.
        let (inFlight, tasks, held) = try await loop.submit {
            #expect(kept.value.1.ask(InProcessAuthLinkTests.query("next", 3)) == nil)
            return (kept.value.0.inFlight, kept.value.0.tasks, kept.value.1.held)
        }.get()
        #expect(inFlight == 0 && tasks == 2 && held == 1, "inFlight \(inFlight), tasks \(tasks), held \(held)")
        await gate.open()
        // The stubborn tasks end; "next" is answered (sent once there is room, or timed out).
        while try await loop.submit({ kept.value.0.tasks }).get() != 0 || answers.withLock({ $0["next"] }) == nil {
            try #require(ContinuousClock.now < deadline, "answers: \(answers.withLock { $0 })")
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(answers.withLock { $0["stubborn1"] } == .timedOut && answers.withLock { $0["stubborn2"] } == .timedOut)
    }
}

/// Holds hooks until the test opens it.
actor Gate {
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var isOpen = false

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters.removeAll()
    }
}
