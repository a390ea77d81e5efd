import Glibc
import IPC
public import Logging

/// The privileged parent (OpenBSD httpd/relayd style): owns the listening sockets, accepts,
/// and hands each connection to the broker without reading a byte of it; starts, watches and
/// restarts its children; turns signals into drain, reload and shutdown. One thread, one poll(2)
/// loop. What to do is decided by ``SupervisorPolicy``; this class only carries it out.
public final class Supervisor {
    /// A running child as the supervisor holds it: its pid and its channel.
    struct Child {
        let pid: pid_t
        var channel: HandoffChannel?
        /// The phase of what the child sends on `channel`: checked before its row's handler sees
        /// a frame, so no handler has to know the order (a `ready` before `hello`, a second
        /// `ready`, a `tlsAck` for no generation sent are refused and restart the child).
        var gate: FrameGate
        /// It leads a process group of its own (its descendants are killed with it).
        let ownGroup: Bool

        /// SIGKILL to the child (and its group when it has one).
        func kill() { _ = Glibc.kill(ownGroup ? -pid : pid, SIGKILL) }
    }

    /// What one entry of the poll set belongs to, so that each `revents` is read by its owner,
    /// never by its position.
    enum Slot {
        case signals
        case logRelay
        case channel(Role, pid: pid_t)
        case listener(Listener)
        case metrics(Int32)
    }

    let configuration: SupervisorConfiguration
    /// The broker settings in force: the configured ones, or the last successful reload's.
    var brokerSettings: BrokerSettings
    let logger: Logger
    var listeners: [Listener] = []
    /// The process table's rows for this configuration.
    let rows: [Role: RoleRow]
    var children: [Role: Child] = [:]
    var policy: SupervisorPolicy
    var handOff = HandOffState()
    /// The checked TLS material (kept so that a restarted broker gets it too), and which
    /// generation of it the broker acknowledged (`tlsAck`).
    var tls = TLSHandoff()
    var tlsMaterial: TLSMaterial? { tls.current }
    /// Set when stderr is a regular file (see ``LogRelay``).
    let logRelay = LogRelay.ifStderrIsAFile()
    /// `--metrics-port` (or the `metrics` socket): nil without it.
    var metricsEndpoint: MetricsEndpoint?
    var metrics = SupervisorMetrics()
    /// Set by the policy's `exit`: `run()` returns it.
    var exitStatus: Int32?

    public init(configuration: SupervisorConfiguration, logger: Logger) {
        self.configuration = configuration
        self.brokerSettings = configuration.broker
        self.logger = logger
        let table = ProcessTable.rows(for: configuration)
        rows = Dictionary(uniqueKeysWithValues: table.map { ($0.role, $0) })
        policy = SupervisorPolicy(
            roles: table.map { ($0.role, $0.name, $0.restart) }, drainDeadlineMs: configuration.drainDeadlineMs, watchdogIntervalMs: Systemd.watchdogIntervalMs(),
            reloadable: configuration.reload != nil || configuration.tls != nil)
    }

    /// Runs until SIGTERM/SIGINT (returns 0), a crash loop or a child that cannot start
    /// (returns 1), or a fatal condition at start (throws).
    public func run() throws(SupervisorError) -> Int32 {
        let signals = try SignalSource([SIGCHLD, SIGTERM, SIGINT, SIGHUP])
        signal(SIGPIPE, SIG_IGN)
        try setUp()
        feed(.start)
        while exitStatus == nil {
            let now = monotonicMilliseconds()
            var slots: [Slot] = [.signals]
            var fds = [pollfd(fd: signals.descriptor, events: Int16(POLLIN), revents: 0)]
            for (role, child) in children {
                guard let channel = child.channel else { continue }
                // Without credit, a credit frame (POLLIN) comes first; after ENOBUFS, the pause.
                let waitsForRoom = role == .broker && handOff.waitsForRoom(now: now) && policy.canHandOff
                slots.append(.channel(role, pid: child.pid))
                fds.append(pollfd(fd: channel.rawFD, events: Int16(POLLIN) | (waitsForRoom ? Int16(POLLOUT) : 0), revents: 0))
            }
            if let logRelay {
                slots.append(.logRelay)
                fds.append(pollfd(fd: logRelay.readEnd, events: Int16(POLLIN), revents: 0))
            }
            for entry in metricsEndpoint?.pollEntries() ?? [] {
                slots.append(.metrics(entry.fd))
                fds.append(pollfd(fd: entry.fd, events: entry.events, revents: 0))
            }
            if policy.admits && handOff.mayAccept(now: now) {
                for listener in listeners {
                    slots.append(.listener(listener))
                    fds.append(pollfd(fd: listener.descriptor, events: Int16(POLLIN), revents: 0))
                }
            }
            let ready = poll(&fds, nfds_t(fds.count), timeout(now: now))
            if ready < 0 && errno != EINTR {
                logger.error("poll failed: \(SupervisorError.errnoText())")
            }
            for (slot, entry) in zip(slots, fds) where entry.revents != 0 && exitStatus == nil {
                switch slot {
                case .signals:
                    for signal in signals.pending() where exitStatus == nil { handle(signal: signal) }
                case .logRelay:
                    logRelay?.drain()
                case .channel(let role, let pid):
                    guard children[role]?.pid == pid else { continue }  // replaced meanwhile
                    if entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { readFrames(from: role) }
                    if entry.revents & Int16(POLLOUT) != 0 { flushPending() }
                case .listener(let listener):
                    if entry.revents & Int16(POLLIN) != 0 { acceptConnections(on: listener) }
                case .metrics(let fd):
                    serveMetrics(fd, revents: entry.revents)
                }
            }
            guard exitStatus == nil else { break }
            tls.checkDeadline(now: monotonicMilliseconds(), logger: logger)
            metricsEndpoint?.expire(now: monotonicMilliseconds())
            feed(.tick)
        }
        return exitStatus ?? 0
    }

    /// The poll timeout: until the policy's next deadline, the end of an accept pause or the
    /// TLS answer's deadline, whichever comes first.
    private func timeout(now: Int64) -> Int32 {
        var deadline = policy.nextDeadline(now: now)
        if handOff.pausedUntil > now { deadline = min(deadline, handOff.pausedUntil) }
        if let due = tls.answerDue { deadline = min(deadline, due) }
        if let due = metricsEndpoint?.nextDeadline { deadline = min(deadline, due) }
        return Int32(max(0, deadline - now))
    }

    /// One poll result of the metrics endpoint: a listener to accept on, or a client to read
    /// from or write to.
    private func serveMetrics(_ fd: Int32, revents: Int16) {
        guard let endpoint = metricsEndpoint else { return }
        if endpoint.isListener(fd) {
            endpoint.accept(on: fd, now: monotonicMilliseconds())
        } else {
            endpoint.serve(fd, revents: revents) {
                metrics.render(processes: [("supervisor", getpid())] + children.map { ($0.key.rawValue, $0.value.pid) })
            }
        }
    }

    private func handle(signal: Int32) {
        switch signal {
        case SIGCHLD: reapChildren()
        case SIGTERM, SIGINT: feed(.stop)
        case SIGHUP: feed(.reload)
        default: break
        }
    }

    /// Hands `event` to the policy and carries out its actions, and the actions of the events
    /// those produce (a spawn's `childStarted`), in order.
    func feed(_ event: SupervisorPolicy.Event) {
        var queue = [event]
        var index = 0
        while index < queue.count, exitStatus == nil {
            let actions = policy.handle(queue[index], now: monotonicMilliseconds())
            index += 1
            for action in actions where exitStatus == nil { queue += execute(action) }
        }
    }

    private func execute(_ action: SupervisorPolicy.Action) -> [SupervisorPolicy.Event] {
        switch action {
        case .spawn(let role):
            return spawn(role)
        case .kill(let role):
            children[role]?.kill()
            children[role]?.channel = nil
        case .drain:
            return drain()
        case .reloadAuth:
            reloadAuth()
        case .reloadConfig:
            reloadConfiguration()
        case .notify(let notification):
            notify(notification)
        case .log(let level, let text):
            logger.log(level: level, "\(text)")
        case .exit(let status):
            finish(status: status)
        }
        return []
    }

    private func notify(_ notification: SupervisorPolicy.Notification) {
        switch notification {
        case .started:
            let pid = children[.broker]?.pid ?? 0
            if let first = listeners.first {
                logger.notice("Started PeerServer on \(configuration.host ?? first.address), port: \(first.port), path: \(brokerSettings.path)")
            }
            Systemd.notify("READY=1\nSTATUS=serving; broker pid \(pid)\nMAINPID=\(getpid())")
        case .reloading:
            Systemd.notify("RELOADING=1\nMONOTONIC_USEC=\(Systemd.monotonicMicroseconds())")
        case .reloaded:
            Systemd.notify("READY=1")
        case .stopping:
            Systemd.notify("STOPPING=1\nSTATUS=draining")
        case .watchdog:
            Systemd.notify("WATCHDOG=1")
        case .status(let text):
            Systemd.notify("STATUS=\(text)")
        }
    }

    /// Stops accepting and asks the broker to close its peers (its exit ends the drain).
    private func drain() -> [SupervisorPolicy.Event] {
        for listener in listeners { close(listener.descriptor) }
        listeners = []
        handOff.dropPending()
        guard let channel = children[.broker]?.channel else { return [] }
        do {
            try channel.send(DrainRequest(deadlineMs: configuration.drainDeadlineMs))
        } catch {
            logger.warning("cannot ask the broker to drain (\(error)); stopping it")
            return [.channelFailed(.broker)]
        }
        return []
    }

    /// Kills and reaps every child left, and ends the loop with `status`.
    private func finish(status: Int32) {
        for child in children.values {
            child.kill()
            var ignored: Int32 = 0
            waitpid(child.pid, &ignored, 0)
        }
        children = [:]
        metricsEndpoint?.closeAll()
        logRelay?.drain()  // the children's last lines before ours
        if status == 0 { logger.notice("stopped") }
        exitStatus = status
    }
}
