import Glibc
import IPC
import Logging

/// Starting, reading and reaping the children: one path for every role.
extension Supervisor {
    /// The children's environment: PATH, LANG and JOURNAL_STREAM (their stderr is the journal's
    /// when it is ours), nothing else of the supervisor's.
    static var childEnvironment: [String] { RoleSpawner.minimalEnvironment(passing: ["JOURNAL_STREAM"]) }

    /// Starts `role` (a child it replaces is forgotten, and reaped as an unknown one) and says
    /// how that went.
    func spawn(_ role: Role) -> SupervisorPolicy.Event {
        children[role] = nil
        let name = SupervisorPolicy.name(role)
        do {
            let child = try role == .broker ? startBroker() : startAuthHelper()
            children[role] = child
            logger.info("\(name) started pid=\(child.pid)")
            return .childStarted(role, pid: child.pid)
        } catch {
            let consequence = role == .auth ? "; registrations are denied until it runs" : ""
            logger.error("cannot start the \(name) (\(configuration.executable)): \(error)\(consequence)")
            return .childFailedToStart(role)
        }
    }

    /// The broker: its channel as fd 3, then the setup phase (TLS material, if any, and `hello`).
    private func startBroker() throws(SupervisorError) -> Child {
        let (mine, theirs) = try wrap { () throws(IPCError) in try HandoffChannel.pair() }
        let pid = try wrap { () throws(IPCError) in
            try RoleSpawner.spawn(
                executable: configuration.executable, arguments: configuration.brokerArguments,
                fdMap: [(parent: theirs.rawFD, child: 3)], environment: Self.childEnvironment, stderr: logRelay?.writeEnd)
        }
        _ = consume theirs
        do {
            try mine.setNonBlocking(true)
            tls.brokerStarted()
            if tlsMaterial != nil { try sendTLSMaterial(over: mine) }
            try mine.send(type: .hello, message: brokerSettings)
        } catch {
            logger.error("cannot send hello to the broker: \(error)")
        }
        return Child(pid: pid, channel: mine, ownGroup: false)
    }

    /// The auth helper, in a session of its own (it and its policy program die together), with
    /// a fresh broker↔helper socketpair: the helper gets its end as fd 3 (and its supervisor
    /// channel as fd 4), the running broker gets the other end in an `authChannel` frame — so a
    /// helper restart drops no peer. Without the broker's channel it cannot start.
    private func startAuthHelper() throws(SupervisorError) -> Child {
        guard let arguments = configuration.authArguments else {
            throw SupervisorError(.spawn, "no auth helper is configured")
        }
        guard let brokerChannel = children[.broker]?.channel else {
            throw SupervisorError(.spawn, "the broker has no channel to connect the helper to")
        }
        return try wrap { () throws(IPCError) in
            let (brokerEnd, helperEnd) = try HandoffChannel.pair(roles: (.broker, .auth))
            let (mine, theirs) = try HandoffChannel.pair(roles: (.supervisor, .auth))
            let pid = try RoleSpawner.spawn(
                executable: configuration.executable, arguments: arguments,
                fdMap: [(parent: helperEnd.rawFD, child: 3), (parent: theirs.rawFD, child: 4)],
                environment: Self.childEnvironment, newSession: true, stderr: logRelay?.writeEnd)
            let child = Child(pid: pid, channel: mine, ownGroup: true)
            do throws(IPCError) {
                try mine.setNonBlocking(true)
                try brokerChannel.send(type: .authChannel, fd: brokerEnd.rawFD)
            } catch {
                child.kill()  // reaped as an unknown child
                throw error
            }
            return child
        }
    }

    private func wrap<T>(_ body: () throws(IPCError) -> T) throws(SupervisorError) -> T {
        do { return try body() } catch { throw SupervisorError(.spawn, "\(error)") }
    }

    /// Reads what `role` sent, for every role: EOF and a bad frame are events for the policy, a
    /// good frame goes to the role's handler.
    func readFrames(from role: Role) {
        let name = SupervisorPolicy.name(role)
        for _ in 0..<64 {
            guard let channel = children[role]?.channel, exitStatus == nil else { return }
            do {
                guard let frame = try channel.receive() else {
                    children[role]?.channel = nil  // the child is gone or going; SIGCHLD tells how
                    feed(.channelClosed(role))
                    return
                }
                if let event = try role == .broker ? brokerFrame(frame) : unexpected(frame, from: role) { feed(event) }
                flushPending()  // a `ready` or a `credit` may let the waiting connection go
            } catch where error.code == .wouldBlock {
                return
            } catch {
                logger.error("the \(name) sent a bad frame (\(error)); restarting it")
                feed(.channelFailed(role))
                return
            }
        }
    }

    private func unexpected(_ frame: borrowing ReceivedFrame, from role: Role) -> SupervisorPolicy.Event? {
        logger.error("the \(SupervisorPolicy.name(role)) sent an unexpected \(frame.type) frame; restarting it")
        return .channelFailed(role)
    }

    /// The broker's frames: `ready`, `credit`, `tlsAck`.
    private func brokerFrame(_ frame: borrowing ReceivedFrame) throws(IPCError) -> SupervisorPolicy.Event? {
        switch frame.type {
        case .ready:
            return .childReady(.broker)
        case .credit:
            return .credit(try frame.decode(AdmissionCredit.self).count)
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
            if child.ownGroup { child.kill() }  // its policy program, if any, goes with it
            feed(.childExited(role, ChildExit(status: status)))
            if exitStatus != nil { return }
        }
    }
}
