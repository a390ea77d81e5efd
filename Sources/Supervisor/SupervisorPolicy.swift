import IPC
import Logging

/// The supervisor's decisions, apart from its I/O: given what happened (a child started, died,
/// closed its channel, said `ready`; a signal; time passing) it says what to do (start or kill
/// a child, drain, reload, tell systemd, exit). Time comes in with every event, so restart
/// backoff, crash limits, the startup deadline, drain and the watchdog are tested without
/// processes or clocks (Tests/SupervisorTests).
struct SupervisorPolicy: Sendable {
    /// What happened. `now` travels beside each event (monotonic milliseconds).
    enum Event: Sendable, Equatable {
        /// The supervisor is ready to start its children.
        case start
        case childStarted(Role, pid: Int32)
        /// Spawning the child or setting up its channels failed (the reason is logged already).
        case childFailedToStart(Role)
        case childReady(Role)
        /// EOF on the child's channel: it is going; its exit is expected soon.
        case channelClosed(Role)
        /// The channel is unusable (a bad or unexpected frame, a failed send): kill the child now.
        case channelFailed(Role)
        case childExited(Role, ChildExit)
        /// The broker granted room for `count` more connections (`credit`).
        case credit(UInt32)
        /// One connection was handed to the broker (it used one credit).
        case handedOff
        /// Time passed (every turn of the poll loop).
        case tick
        /// SIGTERM or SIGINT.
        case stop
        /// SIGHUP.
        case reload
    }

    /// What to do. The supervisor carries them out in order.
    enum Action: Sendable, Equatable {
        case spawn(Role)
        /// SIGKILL (the child's process group when it has one of its own).
        case kill(Role)
        /// Close the listeners, drop the connection waiting for a broker, send `drain`.
        case drain
        /// Send `authReload` to the auth helper.
        case reloadAuth
        /// Re-read the configuration and TLS files and hand them to the broker.
        case reloadConfig
        case notify(Notification)
        case log(Logger.Level, String)
        /// Kill and reap every child left, and end `run()` with this status.
        case exit(Int32)
    }

    /// A state change for the service manager (sd_notify).
    enum Notification: Sendable, Equatable {
        /// The first `READY=1`: the service serves (logged as "Started PeerServer on …").
        case started
        case reloading
        /// `READY=1` after a reload.
        case reloaded
        case stopping
        case watchdog
        /// A `STATUS=` line only.
        case status(String)
    }

    /// One kind of child as the policy sees it.
    struct Child: Sendable {
        let policy: RestartPolicy
        var pid: Int32?
        var startedAt: Int64 = 0
        var hasChannel = false
        var ready = false
        /// A kill was asked for and the child has not been reaped yet.
        var killSent = false
        /// Its channel closed: killed unless reaped by then.
        var killAt: Int64?
        var restartAt: Int64?
        /// Deaths (and failed starts) inside the policy's window.
        var deaths: [Int64] = []

        var isUp: Bool { pid != nil }
    }

    /// Connections the broker has room for (its `credit` frames), and whether it said it is full.
    struct Admission: Sendable, Equatable {
        var credits: UInt32 = 0
        var credited = false
        var full = false
    }

    /// How long after a channel's EOF an unreaped child is killed.
    static let exitGraceMs: Int64 = 1000
    /// How long after the drain deadline a broker still running is killed.
    static let drainGraceMs: Int64 = 2000
    /// The poll loop wakes at least this often.
    static let maxSleepMs: Int64 = 1000

    var children: [Role: Child]
    /// Each role's name in log lines.
    let names: [Role: String]
    /// The roles in start order (a role after the one it starts with).
    let order: [Role]
    let drainDeadlineMs: Int64
    let watchdogIntervalMs: Int64?
    /// Whether SIGHUP has files to re-read (a configuration file or TLS files).
    let reloadable: Bool
    var lastWatchdog: Int64?
    var drainingSince: Int64?
    /// The first `READY=1` was sent.
    var announced = false
    var admission = Admission()
    var finished = false

    /// - Parameters:
    ///   - roles: each child role with its name in logs and its restart policy, leaders before the
    ///     roles started with them.
    ///   - drainDeadlineMs: how long a draining broker may take (it is killed 2 s after).
    ///   - watchdogIntervalMs: systemd's `WatchdogSec=`, nil when not set.
    ///   - reloadable: whether SIGHUP has a configuration file or TLS files to re-read.
    init(roles: [(Role, String, RestartPolicy)], drainDeadlineMs: UInt32, watchdogIntervalMs: Int64?, reloadable: Bool) {
        var children: [Role: Child] = [:]
        for (role, _, policy) in roles { children[role] = Child(policy: policy) }
        self.children = children
        self.names = Dictionary(uniqueKeysWithValues: roles.map { ($0.0, $0.1) })
        self.order = roles.map(\.0)
        self.drainDeadlineMs = Int64(drainDeadlineMs)
        self.watchdogIntervalMs = watchdogIntervalMs
        self.reloadable = reloadable
    }

    /// Whether new connections may be accepted: a broker that said `ready`, whose channel is
    /// up, that has granted credit and has room (or said it is full: then they are shed), and no
    /// drain.
    var admits: Bool {
        guard let broker = children[.broker], broker.ready, broker.hasChannel, admission.credited, drainingSince == nil
        else { return false }
        return admission.credits > 0 || admission.full
    }

    /// Whether a connection can be handed over now (credit for it), rather than shed.
    var canHandOff: Bool { admits && admission.credits > 0 }

    /// Whether `role` is configured and has a channel up.
    func hasChannel(_ role: Role) -> Bool { children[role]?.hasChannel == true }

    /// Applies `event` at `now` and returns what to do.
    mutating func handle(_ event: Event, now: Int64) -> [Action] {
        guard !finished else { return [] }
        let actions: [Action]
        switch event {
        case .start:
            actions = order.filter { children[$0]?.policy.startsWith == nil }.map { .spawn($0) }
        case .childStarted(let role, let pid):
            actions = started(role, pid: pid, now: now)
        case .childFailedToStart(let role):
            actions = failedToStart(role, now: now)
        case .childReady(let role):
            actions = ready(role)
        case .channelClosed(let role):
            children[role]?.hasChannel = false
            if children[role]?.isUp == true, children[role]?.killSent == false { children[role]?.killAt = now + Self.exitGraceMs }
            actions = []
        case .channelFailed(let role):
            actions = kill(role)
        case .childExited(let role, let status):
            actions = exited(role, status: status, now: now)
        case .credit(let count):
            admission.credits = admission.credits.addingReportingOverflow(count).overflow ? .max : admission.credits + count
            admission.credited = true
            admission.full = count == 0
            actions = []
        case .handedOff:
            if admission.credits > 0 { admission.credits -= 1 }
            actions = []
        case .tick:
            actions = tick(now: now)
        case .stop:
            actions = stop(now: now)
        case .reload:
            actions = reload()
        }
        if actions.contains(where: { if case .exit = $0 { true } else { false } }) { finished = true }
        return actions
    }

    /// When the next timed decision is due (absolute monotonic ms), at most `maxSleepMs` away.
    func nextDeadline(now: Int64) -> Int64 {
        var deadline = now + Self.maxSleepMs
        if let interval = watchdogIntervalMs { deadline = min(deadline, lastWatchdog.map { $0 + interval / 2 } ?? now) }
        if let since = drainingSince {
            // While draining no child is started or killed by a timer: only the drain deadline counts.
            return min(deadline, since + drainDeadlineMs + Self.drainGraceMs + 1)
        }
        for role in order {
            guard let child = children[role] else { continue }
            if let at = child.restartAt, !child.isUp, leaderIsUp(role) { deadline = min(deadline, at) }
            if let at = child.killAt, child.isUp { deadline = min(deadline, at) }
            if let limit = child.policy.startupDeadlineMs, child.isUp, !child.ready, !child.killSent {
                deadline = min(deadline, child.startedAt + limit + 1)
            }
        }
        return deadline
    }

    /// A role started with another can start only while that one's channel is up.
    func leaderIsUp(_ role: Role) -> Bool {
        guard let leader = children[role]?.policy.startsWith else { return true }
        return children[leader]?.hasChannel == true
    }

    /// A role's name in log lines.
    func name(_ role: Role) -> String { names[role] ?? "\(role)" }
}
