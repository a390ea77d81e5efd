import IPC
import Logging
import Testing

@testable import Supervisor

/// The supervisor's decisions without processes: every event carries its own `now`, so the
/// backoff, the crash limit, the deadlines and the watchdog are checked at exact milliseconds.
@Suite("Supervisor policy")
struct SupervisorPolicyTests {
    typealias Action = SupervisorPolicy.Action

    /// A policy for a broker and (unless `auth` is false) an auth helper.
    static func make(auth: Bool = true, watchdogMs: Int64? = nil, reloadable: Bool = true) -> SupervisorPolicy {
        var roles: [(Role, String, RestartPolicy)] = [(.broker, "broker", .broker)]
        if auth { roles.append((.auth, "auth helper", .authHelper)) }
        return SupervisorPolicy(roles: roles, drainDeadlineMs: 3000, watchdogIntervalMs: watchdogMs, reloadable: reloadable)
    }

    /// A policy whose broker (pid 10) and helper (pid 20) have started at 0 ms, neither ready.
    static func started(auth: Bool = true, watchdogMs: Int64? = nil) -> SupervisorPolicy {
        var policy = make(auth: auth, watchdogMs: watchdogMs)
        _ = policy.handle(.start, now: 0)
        _ = policy.handle(.childStarted(.broker, pid: 10), now: 0)
        if auth { _ = policy.handle(.childStarted(.auth, pid: 20), now: 0) }
        return policy
    }

    /// A policy whose broker (pid 10) and helper (pid 20) are up, the broker ready with credit.
    static func serving(auth: Bool = true, watchdogMs: Int64? = nil) -> SupervisorPolicy {
        var policy = started(auth: auth, watchdogMs: watchdogMs)
        _ = policy.handle(.childReady(.broker), now: 5)
        _ = policy.handle(.credit(10), now: 5)
        return policy
    }

    static func logs(_ actions: [Action]) -> [String] {
        actions.compactMap { if case .log(_, let text) = $0 { text } else { nil } }
    }

    static func withoutLogs(_ actions: [Action]) -> [Action] {
        actions.filter { if case .log = $0 { false } else { true } }
    }

    @Test("start spawns the broker only; the helper is spawned once the broker has started")
    func startOrder() {
        var policy = Self.make()
        #expect(policy.handle(.start, now: 0) == [.spawn(.broker)])
        #expect(policy.handle(.childStarted(.broker, pid: 10), now: 1) == [.spawn(.auth)])
        #expect(policy.handle(.childStarted(.auth, pid: 20), now: 1) == [])
    }

    @Test("a broker that keeps dying is restarted after 0, 100, 200, 400, 800 ms; the 6th death within 60 s kills the helper and exits 1")
    func brokerBackoffAndCrashLimit() throws {
        var policy = Self.serving()
        var now: Int64 = 1000
        var delays: [Int64] = []
        var pid: Int32 = 10
        for _ in 0..<5 {
            let actions = policy.handle(.childExited(.broker, .signalled(9)), now: now)
            #expect(Self.logs(actions).first?.contains("killed by signal 9") == true, "\(actions)")
            var at = now
            if !actions.contains(.spawn(.broker)) {
                at = try #require(policy.children[.broker]?.restartAt)
                #expect(policy.nextDeadline(now: now) == at)
                #expect(Self.withoutLogs(policy.handle(.tick, now: at - 1)) == [])
                #expect(Self.withoutLogs(policy.handle(.tick, now: at)) == [.spawn(.broker)])
            }
            delays.append(at - now)
            pid += 1
            now = at + 10
            #expect(policy.handle(.childStarted(.broker, pid: pid), now: now) == [.kill(.auth), .spawn(.auth)])
            _ = policy.handle(.childStarted(.auth, pid: pid + 100), now: now)
        }
        #expect(delays == [0, 100, 200, 400, 800])
        let last = policy.handle(.childExited(.broker, .signalled(9)), now: now + 10)
        #expect(Self.withoutLogs(last) == [.kill(.auth), .exit(1)])
        #expect(Self.logs(last).contains { $0.contains("died 6 times within 60 s; giving up") })
        #expect(policy.handle(.tick, now: now + 20) == [], "nothing after the exit")
    }

    @Test("deaths older than the 60 s window do not count toward the limit or the backoff")
    func crashWindow() {
        var policy = Self.serving(auth: false)
        for index in 0..<5 {
            let now = Int64(index) * 20_000
            _ = policy.handle(.childExited(.broker, .exited(1)), now: now)
            _ = policy.handle(.tick, now: policy.nextDeadline(now: now))
            _ = policy.handle(.childStarted(.broker, pid: Int32(100 + index)), now: policy.nextDeadline(now: now))
        }
        // Deaths at 0, 20, 40, 60, 80 s: at 100 s only 60 and 80 are inside the window.
        let actions = policy.handle(.childExited(.broker, .exited(1)), now: 100_000)
        #expect(!actions.contains(.exit(1)))
        #expect(Self.logs(actions).contains("restarting the broker in 200 ms"), "\(actions)")
    }

    @Test("the auth helper is restarted for ever, its backoff capped at 5 s; it never ends the service")
    func helperBackoffCapped() throws {
        var policy = Self.serving()
        var now: Int64 = 100
        var delays: [Int64] = []
        for index in 0..<12 {
            let actions = policy.handle(.childExited(.auth, .exited(3)), now: now)
            #expect(!actions.contains(.exit(1)))
            #expect(Self.logs(actions).first == "auth helper pid=\(20 + index) exited with status 3; restarting it")
            let at = actions.contains(.spawn(.auth)) ? now : try #require(policy.children[.auth]?.restartAt)
            if at > now {
                #expect(policy.nextDeadline(now: now) == min(at, now + SupervisorPolicy.maxSleepMs))
                #expect(policy.handle(.tick, now: at - 1) == [])
                #expect(policy.handle(.tick, now: at) == [.spawn(.auth)])
            }
            delays.append(at - now)
            now = at + 1
            _ = policy.handle(.childStarted(.auth, pid: Int32(21 + index)), now: now)
        }
        #expect(delays == [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000, 5000])
    }

    @Test("a helper restart waits for the broker's channel: nextDeadline skips it, the broker's start spawns it")
    func followerWaitsForLeader() {
        var policy = Self.serving()
        _ = policy.handle(.channelClosed(.broker), now: 100)
        _ = policy.handle(.childExited(.broker, .signalled(9)), now: 150)
        _ = policy.handle(.childExited(.auth, .exited(0)), now: 160)
        // The broker's own restart was immediate (first death); suppose its spawn is slow: the
        // helper's restart (due at once) must not make poll spin while the broker has no channel.
        #expect(policy.nextDeadline(now: 200) == 200 + SupervisorPolicy.maxSleepMs)
        #expect(policy.handle(.tick, now: 5000) == [])
        #expect(policy.handle(.childStarted(.broker, pid: 11), now: 6000) == [.spawn(.auth)])
    }

    @Test("a helper that cannot start (no broker channel) is a failed start, retried with backoff; a broker that cannot start ends the service")
    func failedStarts() {
        var policy = Self.serving()
        _ = policy.handle(.childExited(.auth, .exited(1)), now: 100)  // restarted at once: death 1
        let again = policy.handle(.childFailedToStart(.auth), now: 100)
        #expect(again == [.log(.warning, "restarting the auth helper in 100 ms")])
        #expect(policy.nextDeadline(now: 100) == 200)
        var other = Self.make()
        _ = other.handle(.start, now: 0)
        let fatal = other.handle(.childFailedToStart(.broker), now: 0)
        #expect(Self.withoutLogs(fatal) == [.exit(1)])
    }

    @Test("the broker has 10 s to say ready: killed at 10,001 ms, not before, and only once")
    func startupDeadline() {
        var policy = Self.started()
        #expect(policy.nextDeadline(now: 9500) == 10_001)
        #expect(policy.handle(.tick, now: 10_000) == [])
        let actions = policy.handle(.tick, now: 10_001)
        #expect(Self.withoutLogs(actions) == [.kill(.broker)])
        #expect(Self.logs(actions) == ["broker pid=10 did not report ready within 10000 ms; killing it"])
        #expect(policy.handle(.tick, now: 10_500) == [])
        // The helper has no ready frame: no deadline for it.
        #expect(policy.nextDeadline(now: 10_500) == 11_500)
    }

    @Test("EOF on a channel is not a kill: the child is killed only when not reaped 1 s later, so its own exit status is logged")
    func channelClosedGrace() {
        var policy = Self.serving()
        #expect(policy.handle(.channelClosed(.auth), now: 1000) == [])
        #expect(policy.nextDeadline(now: 1000) == 2000)
        #expect(policy.handle(.tick, now: 1999) == [])
        let exit = policy.handle(.childExited(.auth, .exited(3)), now: 1500)
        #expect(Self.logs(exit).first == "auth helper pid=20 exited with status 3; restarting it")
        #expect(!exit.contains(.kill(.auth)))
        // The broker closes its channel and lingers: killed at +1 s.
        _ = policy.handle(.channelClosed(.broker), now: 3000)
        #expect(!policy.admits, "no accepting without the broker's channel")
        #expect(Self.withoutLogs(policy.handle(.tick, now: 3999)).isEmpty)
        #expect(Self.withoutLogs(policy.handle(.tick, now: 4000)) == [.kill(.broker)])
    }

    @Test("a bad frame kills the child at once")
    func channelFailedKills() {
        var policy = Self.serving()
        #expect(policy.handle(.channelFailed(.broker), now: 100) == [.kill(.broker)])
        #expect(!policy.admits)
        #expect(policy.handle(.channelFailed(.broker), now: 101) == [], "one kill")
    }

    @Test("accepting needs a ready broker with its channel and credit; a credit of 0 (full) admits connections to shed them")
    func admission() {
        var policy = Self.make()
        _ = policy.handle(.start, now: 0)
        _ = policy.handle(.childStarted(.broker, pid: 10), now: 0)
        _ = policy.handle(.credit(2), now: 1)
        #expect(!policy.admits, "not ready yet")
        _ = policy.handle(.childReady(.broker), now: 2)
        #expect(policy.admits && policy.canHandOff)
        _ = policy.handle(.handedOff, now: 3)
        _ = policy.handle(.handedOff, now: 3)
        #expect(!policy.admits, "no credit left, not full: connections wait in the backlog")
        _ = policy.handle(.credit(0), now: 4)
        #expect(policy.admits && !policy.canHandOff, "full: accepted and closed at once")
        _ = policy.handle(.childExited(.broker, .signalled(9)), now: 5)
        _ = policy.handle(.childStarted(.broker, pid: 11), now: 5)
        _ = policy.handle(.childReady(.broker), now: 6)
        #expect(!policy.admits, "a new broker starts without credit")
    }

    @Test("admission credit saturates at UInt32.max instead of overflowing")
    func creditSaturates() {
        var policy = Self.serving()
        _ = policy.handle(.credit(.max), now: 10)
        _ = policy.handle(.credit(.max), now: 10)
        #expect(policy.admission.credits == .max)
    }

    @Test("SIGTERM drains: STOPPING, no accepting, the broker's exit kills the helper and exits 0")
    func drain() {
        var policy = Self.serving()
        let actions = policy.handle(.stop, now: 1000)
        #expect(Self.withoutLogs(actions) == [.notify(.stopping), .drain])
        #expect(!policy.admits)
        let end = policy.handle(.childExited(.broker, .exited(0)), now: 2000)
        #expect(Self.withoutLogs(end) == [.kill(.auth), .exit(0)])
        #expect(Self.logs(end) == ["broker pid=10 exited with status 0"])
    }

    @Test("a broker that does not drain in time is killed 2 s after the drain deadline; the exit status is 0")
    func drainDeadline() {
        var policy = Self.serving()
        _ = policy.handle(.stop, now: 1000)
        #expect(policy.nextDeadline(now: 1000) == 2000)
        #expect(policy.nextDeadline(now: 5500) == 6001)
        #expect(Self.withoutLogs(policy.handle(.tick, now: 6000)) == [])
        #expect(Self.withoutLogs(policy.handle(.tick, now: 6001)) == [.kill(.auth), .kill(.broker), .exit(0)])
    }

    @Test("while draining, child deadlines (restarts, EOF kills) are skipped, so poll does not spin at 0 ms; nothing is restarted")
    func drainSkipsChildDeadlines() {
        var policy = Self.serving()
        _ = policy.handle(.childExited(.auth, .exited(1)), now: 100)
        _ = policy.handle(.childFailedToStart(.auth), now: 100)  // a restart due at 200
        _ = policy.handle(.channelClosed(.broker), now: 120)  // a kill due at 1120
        _ = policy.handle(.stop, now: 150)
        #expect(policy.nextDeadline(now: 1500) == 2500)
        #expect(Self.withoutLogs(policy.handle(.tick, now: 1500)) == [])
    }

    @Test("a second SIGTERM stops at once; SIGTERM with no broker running exits at once")
    func stopTwiceAndWithoutBroker() {
        var policy = Self.serving()
        _ = policy.handle(.stop, now: 10)
        #expect(Self.withoutLogs(policy.handle(.stop, now: 20)) == [.kill(.auth), .kill(.broker), .exit(0)])
        var down = Self.serving(auth: false)
        _ = down.handle(.childExited(.broker, .exited(1)), now: 10)
        #expect(down.handle(.stop, now: 10).last == .exit(0))
    }

    @Test("SIGHUP before the first READY re-reads without RELOADING/READY; after it, RELOADING, reload, READY; while stopping it is ignored")
    func reload() {
        var policy = Self.started()
        #expect(policy.handle(.reload, now: 1) == [.reloadAuth, .reloadConfig])
        _ = policy.handle(.childReady(.broker), now: 2)
        #expect(policy.handle(.reload, now: 3) == [.reloadAuth, .notify(.reloading), .reloadConfig, .notify(.reloaded)])
        _ = policy.handle(.stop, now: 4)
        #expect(Self.withoutLogs(policy.handle(.reload, now: 5)) == [])
    }

    @Test("SIGHUP with nothing to re-read: the helper still reloads; without a helper it says so")
    func reloadNothing() {
        var withHelper = Self.make(reloadable: false)
        _ = withHelper.handle(.start, now: 0)
        _ = withHelper.handle(.childStarted(.broker, pid: 10), now: 0)
        _ = withHelper.handle(.childStarted(.auth, pid: 20), now: 0)
        #expect(withHelper.handle(.reload, now: 1) == [.reloadAuth])
        var alone = Self.make(auth: false, reloadable: false)
        #expect(Self.logs(alone.handle(.reload, now: 1)).first?.contains("nothing to re-read") == true)
    }

    @Test("the watchdog is pinged at once and then every half interval")
    func watchdog() {
        var policy = Self.serving(auth: false, watchdogMs: 4000)
        #expect(policy.nextDeadline(now: 10) == 10)
        #expect(policy.handle(.tick, now: 10) == [.notify(.watchdog)])
        #expect(policy.nextDeadline(now: 10) == 1010, "the poll still wakes once a second")
        #expect(policy.nextDeadline(now: 1500) == 2010)
        #expect(policy.handle(.tick, now: 2009) == [])
        #expect(policy.handle(.tick, now: 2010) == [.notify(.watchdog)])
    }

    @Test("the first ready is READY=1; a restarted broker's ready is a log line and a STATUS, not a second READY")
    func readyOnce() {
        var policy = Self.make(auth: false)
        _ = policy.handle(.start, now: 0)
        _ = policy.handle(.childStarted(.broker, pid: 10), now: 0)
        #expect(policy.handle(.childReady(.broker), now: 1) == [.notify(.started)])
        #expect(policy.handle(.childReady(.broker), now: 1) == [], "a repeated ready is ignored")
        _ = policy.handle(.childExited(.broker, .signalled(9)), now: 2)
        _ = policy.handle(.childStarted(.broker, pid: 11), now: 2)
        #expect(policy.handle(.childReady(.broker), now: 3) == [
            .log(.notice, "broker pid=11 ready; accepting again"), .notify(.status("serving; broker restarted as pid 11")),
        ])
    }

    @Test("the restart policies' delays: the broker's 0, 100, 200, 400, 800; the helper's capped at 5 s")
    func delays() {
        #expect((1...5).map { RestartPolicy.broker.delayMs(afterDeaths: $0) } == [0, 100, 200, 400, 800])
        #expect(RestartPolicy.broker.crashLimit == 5)
        #expect(RestartPolicy.authHelper.crashLimit == nil)
        #expect(RestartPolicy.authHelper.delayMs(afterDeaths: 1000) == 5000)
    }
}
