import IPC
import Logging

/// The decisions behind each event of ``SupervisorPolicy``.
extension SupervisorPolicy {
    mutating func started(_ role: Role, pid: Int32, now: Int64) -> [Action] {
        guard let policy = children[role]?.policy else { return [] }
        let deaths = children[role]?.deaths ?? []
        children[role] = Child(policy: policy, pid: pid, startedAt: now, hasChannel: true, deaths: deaths)
        if role == .broker { admission = Admission() }
        // A new leader gets new followers: the old ones' channels ended with the old leader.
        var actions: [Action] = []
        for follower in order where children[follower]?.policy.startsWith == role {
            if children[follower]?.isUp == true { actions.append(.kill(follower)) }
            children[follower]?.pid = nil
            children[follower]?.hasChannel = false
            children[follower]?.restartAt = nil
            actions.append(.spawn(follower))
        }
        return actions
    }

    mutating func failedToStart(_ role: Role, now: Int64) -> [Action] {
        guard let policy = children[role]?.policy else { return [] }
        children[role]?.pid = nil
        children[role]?.hasChannel = false
        if policy.failedStartIsFatal {
            return [.log(.critical, "cannot start the \(name(role)); stopping (see the error above)")] + finish(status: 1)
        }
        if drainingSince != nil { return [] }
        return scheduleRestart(role, now: now)
    }

    mutating func ready(_ role: Role) -> [Action] {
        guard let child = children[role], child.isUp, !child.ready else { return [] }
        children[role]?.ready = true
        guard role == .broker else { return [] }
        if !announced {
            announced = true
            return [.notify(.started)]
        }
        let pid = child.pid ?? 0
        return [.log(.notice, "broker pid=\(pid) ready; accepting again"), .notify(.status("serving; broker restarted as pid \(pid)"))]
    }

    /// Kills `role` now; its exit comes as `childExited`.
    mutating func kill(_ role: Role) -> [Action] {
        guard let child = children[role], child.isUp, !child.killSent else { return [] }
        children[role]?.killSent = true
        children[role]?.hasChannel = false
        children[role]?.ready = false
        children[role]?.killAt = nil
        return [.kill(role)]
    }

    mutating func exited(_ role: Role, status: ChildExit, now: Int64) -> [Action] {
        guard let child = children[role], let pid = child.pid else { return [] }
        children[role]?.pid = nil
        children[role]?.hasChannel = false
        children[role]?.ready = false
        children[role]?.killSent = false
        children[role]?.killAt = nil
        let name = name(role)
        if drainingSince != nil {
            var actions: [Action] = [.log(.info, "\(name) pid=\(pid) \(status)")]
            // The drain ends when the broker is gone.
            if role == .broker { actions += finish(status: 0) }
            return actions
        }
        let again = role == .broker ? "starting a new one" : "restarting it"
        return [.log(.error, "\(name) pid=\(pid) \(status); \(again)")] + scheduleRestart(role, now: now)
    }

    /// Counts a death; restarts after the backoff, or ends the service past the crash limit.
    mutating func scheduleRestart(_ role: Role, now: Int64) -> [Action] {
        guard let policy = children[role]?.policy else { return [] }
        let deaths = (children[role]?.deaths ?? []).filter { now - $0 < policy.crashWindowMs } + [now]
        children[role]?.deaths = deaths
        if let limit = policy.crashLimit, deaths.count > limit {
            let text = "the \(name(role)) died \(deaths.count) times within \(policy.crashWindowMs / 1000) s; giving up so that the service manager's restart policy takes over (see the log lines above for why it died)"
            return [.log(.critical, text)] + finish(status: 1)
        }
        let delay = policy.delayMs(afterDeaths: deaths.count)
        children[role]?.restartAt = now + delay
        if delay == 0, leaderIsUp(role) {
            children[role]?.restartAt = nil
            return [.spawn(role)]
        }
        guard delay > 0 else { return [] }
        return [.log(.warning, "restarting the \(name(role)) in \(delay) ms")]
    }

    mutating func tick(now: Int64) -> [Action] {
        var actions: [Action] = []
        if let interval = watchdogIntervalMs, now - (lastWatchdog ?? now - interval) >= interval / 2 {
            lastWatchdog = now
            actions.append(.notify(.watchdog))
        }
        if let since = drainingSince {
            guard now - since > drainDeadlineMs + Self.drainGraceMs else { return actions }
            return actions + [.log(.warning, "the broker did not finish draining in time; killing it")] + finish(status: 0)
        }
        for role in order {
            guard let child = children[role] else { continue }
            if let at = child.restartAt, now >= at, !child.isUp, leaderIsUp(role) {
                children[role]?.restartAt = nil
                actions.append(.spawn(role))
            }
            if let at = child.killAt, now >= at, child.isUp {
                actions.append(.log(.warning, "the \(name(role)) pid=\(child.pid ?? 0) closed its channel but did not exit within \(Self.exitGraceMs) ms; killing it"))
                actions += kill(role)
            }
            if let limit = child.policy.startupDeadlineMs, child.isUp, !child.ready, !child.killSent, now - child.startedAt > limit {
                actions.append(.log(.error, "\(name(role)) pid=\(child.pid ?? 0) did not report ready within \(limit) ms; killing it"))
                actions += kill(role)
            }
        }
        return actions
    }

    mutating func stop(now: Int64) -> [Action] {
        if drainingSince != nil {
            return [.log(.warning, "second stop signal: stopping now")] + finish(status: 0)
        }
        drainingSince = now
        var actions: [Action] = [
            .log(.notice, "stopping: no new connections; the broker closes its peers"), .notify(.stopping), .drain,
        ]
        if children[.broker]?.isUp != true { actions += finish(status: 0) }
        return actions
    }

    mutating func reload() -> [Action] {
        if drainingSince != nil { return [.log(.info, "SIGHUP while stopping: ignored")] }
        var actions: [Action] = []
        if hasChannel(.auth) { actions.append(.reloadAuth) }
        guard reloadable else {
            if children[.auth] == nil {
                actions.append(.log(.notice, "SIGHUP: no configuration file is in use; settings come from the command line, nothing to re-read"))
            }
            return actions
        }
        // Before the first READY=1 systemd waits for that one; RELOADING=1 would confuse it.
        return actions + (announced ? [.notify(.reloading), .reloadConfig, .notify(.reloaded)] : [.reloadConfig])
    }

    /// Kills every child still running and exits with `status`.
    mutating func finish(status: Int32) -> [Action] {
        var actions: [Action] = []
        for role in order.reversed() where children[role]?.isUp == true && children[role]?.killSent == false {
            children[role]?.killSent = true
            actions.append(.kill(role))
        }
        return actions + [.exit(status)]
    }
}
