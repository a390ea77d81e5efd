import Glibc
import IPC
import Logging

/// A channel end for another child, sent to it once the new child runs.
struct Introduction {
    /// That child's supervisor channel.
    let via: HandoffChannel
    let end: HandoffChannel
    let frame: FrameType
}

/// Starting, reading and reaping the children: one path for every role.
extension Supervisor {
    /// A role's name in log lines.
    func name(_ role: Role) -> String { rows[role]?.name ?? "\(role)" }

    /// The children's environment: PATH, LANG and JOURNAL_STREAM (their stderr is the journal's
    /// when it is ours), nothing else of the supervisor's.
    static var childEnvironment: [String] { RoleSpawner.minimalEnvironment(passing: ["JOURNAL_STREAM"]) }

    /// Starts `role` from its row (a child it replaces is forgotten, and reaped as an unknown
    /// one) and says how that went: a child whose channels cannot be set up after it started is
    /// killed, and restarted like any child that died.
    func spawn(_ role: Role) -> [SupervisorPolicy.Event] {
        children[role] = nil
        guard let row = rows[role] else { return [.childFailedToStart(role)] }
        let child: Child
        let introductions: [Introduction]
        do {
            (child, introductions) = try start(row)
        } catch {
            let consequence = switch role {
            case .auth: "; registrations are denied until it runs"
            case .cluster: "; new ids are refused until it runs"
            default: ""
            }
            logger.error("cannot start the \(row.name) (\(configuration.executable)): \(error)\(consequence)")
            return [.childFailedToStart(role)]
        }
        children[role] = child
        metrics.started(role)
        logger.info("\(row.name) started pid=\(child.pid)")
        do {
            try setUpChannels(of: row, channel: child.channel, introductions: introductions)
        } catch {
            logger.error("cannot set up the channels of the \(row.name) pid=\(child.pid) (\(error)); restarting it")
            return [.childStarted(role, pid: child.pid), .channelFailed(role)]
        }
        return [.childStarted(role, pid: child.pid)]
    }

    /// Spawns any row: a socketpair per channel, each child end at its descriptor number, the
    /// other end kept (the supervisor's) or handed to the peer role after the spawn.
    private func start(_ row: RoleRow) throws(SupervisorError) -> (Child, [Introduction]) {
        try wrap { () throws(IPCError) in
            var fdMap: [(parent: Int32, child: Int32)] = []
            var childEnds: [HandoffChannel] = []
            var mine: HandoffChannel?
            var introductions: [Introduction] = []
            for end in row.channels {
                let (near, far) = try HandoffChannel.pair(roles: (end.peer, row.role))
                if end.peer == .supervisor {
                    mine = near
                } else {
                    guard let via = children[end.peer]?.channel, let frame = end.introducedBy else {
                        throw IPCError(.invalidArgument, "the \(rows[end.peer]?.name ?? "\(end.peer)") has no channel to connect it to")
                    }
                    introductions.append(Introduction(via: via, end: near, frame: frame))
                }
                childEnds.append(far)
                fdMap.append((parent: far.rawFD, child: end.descriptor))
            }
            let pid = try RoleSpawner.spawn(
                executable: configuration.executable, arguments: row.arguments, fdMap: fdMap,
                environment: Self.childEnvironment, newSession: row.ownSession, stderr: logRelay?.writeEnd)
            childEnds.removeAll()  // the child holds them now; the parent's copies close
            return (Child(pid: pid, channel: mine, gate: FrameGate(local: .supervisor, remote: row.role), ownGroup: row.ownSession), introductions)
        }
    }

    /// After the spawn: the peers get their ends, then the setup phase ends with `hello`.
    private func setUpChannels(of row: RoleRow, channel: HandoffChannel?, introductions: [Introduction]) throws(IPCError) {
        for introduction in introductions {
            switch introduction.frame {
            case .authChannel: try introduction.via.send(AuthChannelHandoff(), fd: introduction.end.rawFD)
            case .clusterChannel: try introduction.via.send(ClusterChannelHandoff(), fd: introduction.end.rawFD)
            default: throw IPCError(.invalidArgument, "\(introduction.frame) carries no channel; see ProcessTable.channels(of:)")
            }
        }
        guard let channel else { return }
        try channel.setNonBlocking(true)
        try row.hello(self, channel)
    }

    /// The broker's setup phase: TLS material (if any), then `hello` with its settings.
    func brokerHello(over channel: HandoffChannel) throws(IPCError) {
        tls.brokerStarted()
        if tlsMaterial != nil { try sendTLSMaterial(over: channel) }
        try Self.send(brokerSettings, over: channel, until: monotonicMilliseconds() + Self.setupSendDeadlineMs)
        children[.broker]?.gate.asked(.hello)
    }

    private func wrap<T>(_ body: () throws(IPCError) -> T) throws(SupervisorError) -> T {
        do { return try body() } catch { throw SupervisorError(.spawn, "\(error)") }
    }

    /// Reads what `role` sent, for every role: EOF and a bad frame are events for the policy, a
    /// good frame goes to the role's handler.
    func readFrames(from role: Role) {
        for _ in 0..<64 {
            guard let channel = children[role]?.channel, exitStatus == nil else { return }
            do {
                guard let frame = try channel.receive() else {
                    children[role]?.channel = nil  // the child is gone or going; SIGCHLD tells how
                    feed(.channelClosed(role))
                    return
                }
                try children[role]?.gate.accept(frame)
                if let event = try rows[role]?.frames(self, frame) { feed(event) }
                flushPending()  // a `ready` or a `credit` may let the waiting connection go
            } catch where error.code == .wouldBlock {
                return
            } catch {
                logger.error("the \(name(role)) sent a bad frame (\(error)); restarting it")
                feed(.channelFailed(role))
                return
            }
        }
    }

    func unexpected(_ frame: borrowing ReceivedFrame, from role: Role) -> SupervisorPolicy.Event? {
        logger.error("the \(name(role)) sent an unexpected \(frame.type) frame; restarting it")
        return .channelFailed(role)
    }

    /// The broker's frames: `ready`, `credit`, `tlsAck`.
    func brokerFrame(_ frame: borrowing ReceivedFrame) throws(IPCError) -> SupervisorPolicy.Event? {
        switch frame.type {
        case .ready:
            return .childReady(.broker)
        case .credit:
            return .credit(try frame.decode(AdmissionCredit.self).count)
        case .metrics:
            let sent = try frame.decode(MetricsText.self)
            metrics.brokerText = sent.text
            metrics.brokerResidentBytes = sent.residentBytes
            return nil
        case .tlsAck:
            let ack = try frame.decode(TLSAck.self)
            guard tls.answer(ack, brokerPID: children[.broker]?.pid, logger: logger) else {
                logger.error("broker answered TLS generation \(ack.generation), which it was not sent or already answered; restarting it")
                return .channelFailed(.broker)
            }
            return nil
        default:
            return unexpected(frame, from: .broker)
        }
    }

    /// Reaps every child that ended and tells the policy which role it was.
    func reapChildren() {
        for _ in 0..<64 {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            guard pid > 0 else { break }
            guard let entry = children.first(where: { $0.value.pid == pid }) else {
                logger.info("reaped child pid=\(pid): \(ChildExit(status: status))")
                continue
            }
            let (role, child) = (entry.key, entry.value)
            children[role] = nil
            if role == .broker { metrics.brokerExited() }
            if child.ownGroup { child.kill() }  // its policy program, if any, goes with it
            feed(.childExited(role, ChildExit(status: status)))
            if exitStatus != nil { return }
        }
    }
}
