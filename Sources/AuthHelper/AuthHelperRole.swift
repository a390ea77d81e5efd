import Glibc
public import IPC
public import Logging
import PeerProtocol

/// What the auth helper is started with (its command line).
/// - Parameters:
///   - usersPath: `--auth-users`, or nil.
///   - programPath: `--auth-program`, or nil.
///   - timeoutMs: `--auth-timeout`; a program silent for this long plus a second is restarted.
public struct AuthHelperOptions: Sendable {
    public var usersPath: String?
    public var programPath: String?
    public var timeoutMs: Int
    /// `--auth-jwt-key`, and what reads it (plugged in by the executable), or nil.
    public var jwtKeyPath: String?
    public var makeVerifier: (@Sendable (_ path: String) throws(AuthError) -> any TokenVerifier)?

    public init(
        usersPath: String?, programPath: String?, timeoutMs: Int, jwtKeyPath: String? = nil,
        makeVerifier: (@Sendable (_ path: String) throws(AuthError) -> any TokenVerifier)? = nil
    ) {
        self.usersPath = usersPath
        self.programPath = programPath
        self.timeoutMs = timeoutMs
        self.jwtKeyPath = jwtKeyPath
        self.makeVerifier = makeVerifier
    }

    /// Loads the users file, if one is configured (also used by the supervisor's start-up check).
    public func loadPolicy() throws(AuthError) -> AuthPolicy {
        var users: UsersFile?
        if let usersPath { users = try UsersFile.load(path: usersPath) }
        var verifier: (any TokenVerifier)?
        if let jwtKeyPath {
            guard let makeVerifier else { throw AuthError("--auth-jwt-key: this build has no JWT support") }
            do {
                verifier = try makeVerifier(jwtKeyPath)
            } catch {
                throw AuthError("\(jwtKeyPath): \(error)")
            }
        }
        return AuthPolicy(users: users, hasProgram: programPath != nil, verifier: verifier)
    }
}

/// The auth helper process (`--role auth`): answers the broker's `authQuery` frames on fd 3 from
/// its users file and, optionally, a policy program; logs and forwards `peerEvent`s; re-reads its
/// files on the supervisor's `authReload` (fd 4). One thread, one poll(2) loop. EOF on either
/// channel ends it (status 0); a dead or hung program ends it with status 4 so that the
/// supervisor starts a fresh helper and program.
public enum AuthHelperRole {
    /// Exit status when the policy program died or stopped answering.
    public static let programFailed: Int32 = 4

    /// A question the program was asked: `rid` is the number on its `auth` line, which the
    /// answer must echo (the broker's `requestID` is not shown to the program).
    private struct Waiting {
        let requestID: UInt32
        let rid: UInt64
        let id: String
        let since: Int64
    }

    /// Runs the helper; returns the exit status.
    /// - Parameters:
    ///   - configure: turns the supervisor's `authHello` (the first frame on its channel, read
    ///     before anything else) into the options the helper runs with.
    ///   - confine: enters the sandbox of `settings`; it calls `startProgram` (which starts the policy program)
    ///     before the helper's change of user, with the program's own user when the helper can
    ///     change users (nil otherwise), and `beforeFilter` after the change of user and before
    ///     the seccomp filter.
    public static func run(
        brokerDescriptor: Int32, supervisorDescriptor: Int32, logger: Logger,
        configure: (AuthHelperSettings) -> AuthHelperOptions,
        confine: (_ settings: AuthHelperSettings, _ startProgram: (_ user: RoleSpawner.ProgramUser?) throws -> Void,
                  _ beforeFilter: () throws -> Void) throws -> Void
    ) -> Int32 {
        let broker = HandoffChannel(adopting: brokerDescriptor, roles: ChannelRoles(local: .auth, remote: .broker))
        let supervisor = HandoffChannel(adopting: supervisorDescriptor, roles: ChannelRoles(local: .auth, remote: .supervisor))
        // Every received frame passes its channel's gate before it is dispatched.
        var brokerGate = FrameGate(local: .auth, remote: .broker)
        var supervisorGate = FrameGate(local: .auth, remote: .supervisor)
        // The settings come first, on the still-blocking supervisor channel.
        let settings: AuthHelperSettings
        do {
            guard let frame = try supervisor.receive() else {
                logger.notice("the supervisor went away before authHello")
                return 0
            }
            try supervisorGate.accept(frame)
            settings = try frame.decode(AuthHelperSettings.self)
        } catch {
            logger.critical("no settings from the supervisor: \(error)")
            return 2
        }
        let options = configure(settings)
        var policy: AuthPolicy
        do {
            policy = try options.loadPolicy()
        } catch {
            logger.critical("\(error.description)")
            return 2
        }
        var program: PolicyProgram?
        do {
            try confine(settings, { user in
                if let path = options.programPath { program = try PolicyProgram.start(path: path, user: user) }
            }, {
                policy.verifier?.prime()
            })
            try broker.setNonBlocking(true)
            try supervisor.setNonBlocking(true)
        } catch {
            logger.critical("cannot start the auth helper: \(error)")
            return 3
        }
        var summary = policy.users.map { "users file with \($0.users.count) ids" } ?? "no users file"
        if policy.verifier != nil { summary += ", JWT key \(options.jwtKeyPath ?? "")" }
        if let program { summary += ", policy program \(options.programPath ?? "") pid \(program.pid)" }
        logger.info("auth helper ready: \(summary)")

        var waiting: [Waiting] = []  // queries sent to the program, oldest first
        var lastRID: UInt64 = 0  // the last `rid` given to the program; each question gets the next
        let hangMs = Int64(options.timeoutMs) + 1000
        // Verdicts the broker's channel had no room for (its socket buffer is full), sent in order
        // on POLLOUT; while any wait, no new question is read, so the broker holds back.
        var unanswered: [(requestID: UInt32, verdict: AuthVerdict, id: String)] = []
        var holding = false  // logged once per stall

        /// Sends what waits, in order, until the channel is full (a broker gone drops them all).
        func sendAnswers() {
            var sent = 0
            defer {
                unanswered.removeFirst(sent)
                if unanswered.isEmpty { holding = false }
            }
            for entry in unanswered {
                do {
                    try broker.send(entry.verdict, requestID: entry.requestID)
                    sent += 1
                } catch where error.code == .wouldBlock {
                    if !holding {
                        holding = true
                        logger.notice("the broker is not reading its verdicts (channel full); holding them, and new questions, until it does")
                    }
                    return
                } catch {
                    logger.error("could not answer the broker for \(entry.id) and \(unanswered.count - sent - 1) more: \(error)")
                    sent = unanswered.count
                    return
                }
            }
        }

        func answer(_ requestID: UInt32, _ verdict: AuthVerdict, id: String) {
            unanswered.append((requestID, verdict, id))
            if unanswered.count == 1 { sendAnswers() }
        }

        /// One line of the program's stdout: the answer to the waiting question whose `rid` it
        /// echoes. A line that names no question asked (no `rid`, a wrong one, not JSON) costs
        /// exactly one question, the one waiting longest (it was the one due by order): it is
        /// refused `Error on Auth`, and its own answer, should it come, is then ignored as late.
        func settle(_ line: String) {
            let fields = JSONLine.parseObject(line)
            var rid: UInt64?
            if case .string(let text)? = fields?["rid"] { rid = UInt64(text) }
            if let rid, let index = waiting.firstIndex(where: { $0.rid == rid }) {
                let query = waiting.remove(at: index)
                answer(query.requestID, Self.verdict(fromProgram: line, logger: logger), id: query.id)
            } else if let rid, rid >= 1, rid <= lastRID {
                logger.warning("the policy program answered question \(rid) again, or after it was settled; ignored: \(line.prefix(200))")
            } else if waiting.isEmpty {
                logger.warning("the policy program answered a question nobody asked; ignored: \(line.prefix(200))")
            } else {
                let query = waiting.removeFirst()
                logger.warning("the policy program's answer is not one to a question it was asked (no \"rid\" of a waiting question: answers must echo the rid of their auth line); refusing \(query.id) (rid \(query.rid), the longest waiting) with Error on Auth: \(line.prefix(200))")
                answer(query.requestID, AuthVerdict(allow: false, reason: ProtocolText.authFailed), id: query.id)
            }
        }

        /// Logs what the program wrote to its stderr, a line each (escaped, as every log line), at
        /// most ``programLogLines`` lines per ``programLogWindowMs``: clients choose what the
        /// program is asked, so they could make it write; the rest is read and counted, and the
        /// count logged when the next window opens.
        var logWindowStart: Int64 = 0
        var loggedInWindow = 0
        var suppressed = 0
        func relayProgramLog() {
            guard let program else { return }
            for line in program.readErrorLines() {
                let now = monotonicMilliseconds()
                if now - logWindowStart >= Self.programLogWindowMs {
                    if suppressed > 0 {
                        logger.warning("policy program: \(suppressed) more stderr lines not logged (at most \(Self.programLogLines) per \(Self.programLogWindowMs / 1000) s)")
                    }
                    logWindowStart = now
                    loggedInWindow = 0
                    suppressed = 0
                }
                if loggedInWindow < Self.programLogLines {
                    loggedInWindow += 1
                    logger.notice("policy program: \(line)")
                } else {
                    if suppressed == 0 {
                        logger.warning("policy program: more than \(Self.programLogLines) stderr lines in \(Self.programLogWindowMs / 1000) s; the rest are counted, not logged")
                    }
                    suppressed += 1
                }
            }
        }

        while true {
            var fds = [
                pollfd(fd: broker.rawFD, events: unanswered.isEmpty ? Int16(POLLIN) : Int16(POLLOUT), revents: 0),
                pollfd(fd: supervisor.rawFD, events: Int16(POLLIN), revents: 0),
            ]
            if let program {
                fds.append(pollfd(fd: program.descriptor, events: Int16(POLLIN) | (program.wantsToWrite ? Int16(POLLOUT) : 0), revents: 0))
                // fd -1 (its stderr ended) is skipped by poll.
                fds.append(pollfd(fd: program.errorDescriptor, events: Int16(POLLIN), revents: 0))
            }
            var timeout: Int32 = -1
            if let oldest = waiting.first {
                timeout = Int32(max(0, min(Int64(Int32.max), oldest.since + hangMs - monotonicMilliseconds())))
            }
            if poll(&fds, nfds_t(fds.count), timeout) < 0 && errno != EINTR {
                logger.error("poll failed: errno \(errno)")
                return 1
            }
            if fds.count > 3, fds[3].revents != 0 { relayProgramLog() }
            if let oldest = waiting.first, monotonicMilliseconds() - oldest.since >= hangMs {
                relayProgramLog()
                logger.error("the policy program did not answer for \(oldest.id) within \(hangMs) ms; exiting so that the supervisor restarts the helper and the program")
                return programFailed
            }

            // The supervisor: reload, or EOF.
            if fds[1].revents != 0 {
                do {
                    while let frame = try supervisor.receive() {
                        try supervisorGate.accept(frame)
                        _ = try frame.decode(AuthReloadRequest.self)  // the only type the gate lets through
                        do {
                            let fresh = try options.loadPolicy()
                            policy = fresh
                            logger.notice("auth policy reloaded (\(fresh.users.map { "\($0.users.count) ids" } ?? "no users file"))")
                        } catch {
                            logger.error("auth policy reload failed, keeping the running one: \(error)")
                        }
                    }
                    logger.notice("supervisor channel closed; exiting")
                    return 0
                } catch where error.code == .wouldBlock {
                } catch {
                    logger.error("bad frame from the supervisor (\(error)); exiting")
                    return 2
                }
            }

            // The program: answers (matched by rid), or EOF.
            if let current = program, fds.count > 2, fds[2].revents != 0 {
                do {
                    try current.flush()
                    for line in try current.readLines() { settle(line) }
                } catch {
                    relayProgramLog()  // its last words (a traceback) before the reason it is restarted
                    logger.error("\(error.description); exiting so that the supervisor restarts the helper and the program")
                    return programFailed
                }
            }

            // The broker: room for the verdicts that wait; queries and events, or EOF.
            if fds[0].revents != 0 {
                if !unanswered.isEmpty { sendAnswers() }
                do {
                    while unanswered.isEmpty {
                        guard let frame = try broker.receive() else {
                            logger.notice("broker channel closed; exiting")
                            return 0
                        }
                        try brokerGate.accept(frame)
                        switch frame.type {
                        case .authQuery:
                            let query = try frame.decode(AuthQuery.self)
                            switch policy.decide(query) {
                            case .allow:
                                answer(frame.requestID, AuthVerdict(allow: true), id: query.id)
                            case .deny(let reason):
                                answer(frame.requestID, AuthVerdict(allow: false, reason: reason), id: query.id)
                            case .askProgram:
                                guard let program else {
                                    answer(frame.requestID, AuthVerdict(allow: false, reason: ProtocolText.authFailed), id: query.id)
                                    continue
                                }
                                lastRID += 1
                                waiting.append(Waiting(requestID: frame.requestID, rid: lastRID, id: query.id, since: monotonicMilliseconds()))
                                do {
                                    try program.send(line: JSONLine.object([
                                        ("type", "auth"), ("rid", String(lastRID)), ("id", query.id), ("token", query.token), ("key", query.key),
                                        ("ip", query.ip), ("version", query.version),
                                    ]))
                                } catch {
                                    relayProgramLog()
                                    logger.error("\(error.description); exiting so that the supervisor restarts the helper and the program")
                                    return programFailed
                                }
                            }
                        case .peerEvent:
                            let event = try frame.decode(PeerEventMessage.self)
                            let type = event.kind == .connection ? "connection" : "disconnect"
                            logger.info("\(type) id=\(event.id) key=\(event.key) ip=\(event.ip)")
                            do {
                                try program?.send(line: JSONLine.object([
                                    ("type", type), ("id", event.id), ("key", event.key), ("ip", event.ip),
                                ]))
                            } catch {
                                relayProgramLog()
                                logger.error("\(error.description); exiting so that the supervisor restarts the helper and the program")
                                return programFailed
                            }
                        default:
                            logger.error("unexpected \(frame.type) frame from the broker; exiting")
                            return 2
                        }
                    }
                } catch where error.code == .wouldBlock {
                } catch {
                    logger.error("bad frame from the broker (\(error)); exiting")
                    return 2
                }
            }
        }
    }

    /// `{"rid":…,"allow":true}` → allow; `{"rid":…,"allow":false,"reason":"…"}` → deny with the
    /// reason (default "Invalid ID"); anything else, including `{"error":…}`, → deny "Error on
    /// Auth". (`rid` was matched by the caller.)
    static func verdict(fromProgram line: String, logger: Logger) -> AuthVerdict {
        guard let fields = JSONLine.parseObject(line), case .bool(let allow)? = fields["allow"] else {
            logger.warning("the policy program's answer is not {\"allow\":true|false,…}: \(line.prefix(200))")
            return AuthVerdict(allow: false, reason: ProtocolText.authFailed)
        }
        if allow { return AuthVerdict(allow: true) }
        var reason = AuthPolicy.invalidID
        if case .string(let text)? = fields["reason"], !text.isEmpty {
            reason = String(decoding: Array(text.utf8.prefix(AuthVerdict.maxReasonLength)), as: UTF8.self)
            if reason.utf8.count > AuthVerdict.maxReasonLength || reason.isEmpty { reason = AuthPolicy.invalidID }
        }
        return AuthVerdict(allow: false, reason: reason)
    }

    /// How many of the policy program's stderr lines are logged per window (see relayProgramLog).
    static let programLogLines = 100
    static let programLogWindowMs: Int64 = 10_000

    static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
