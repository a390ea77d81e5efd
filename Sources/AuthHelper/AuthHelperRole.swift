import Glibc
import IPC
public import Logging

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

    private struct Waiting {
        let requestID: UInt32
        let id: String
        let since: Int64
    }

    /// Runs the helper; returns the exit status.
    /// - Parameters:
    ///   - confine: enters the sandbox; it calls its argument (which starts the policy program)
    ///     after the change of user and before the seccomp filter.
    public static func run(
        brokerDescriptor: Int32, supervisorDescriptor: Int32, options: AuthHelperOptions, logger: Logger,
        confine: (_ beforeFilter: () throws -> Void) throws -> Void
    ) -> Int32 {
        let broker = HandoffChannel(adopting: brokerDescriptor, roles: ChannelRoles(local: .auth, remote: .broker))
        let supervisor = HandoffChannel(adopting: supervisorDescriptor, roles: ChannelRoles(local: .auth, remote: .supervisor))
        var policy: AuthPolicy
        do {
            policy = try options.loadPolicy()
        } catch {
            logger.critical("\(error.description)")
            return 2
        }
        var program: PolicyProgram?
        do {
            try confine {
                policy.verifier?.prime()
                if let path = options.programPath { program = try PolicyProgram.start(path: path) }
            }
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

        var waiting: [Waiting] = []  // queries sent to the program, answered in order
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
                    try broker.send(type: .authVerdict, message: entry.verdict, requestID: entry.requestID)
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

        while true {
            var fds = [
                pollfd(fd: broker.rawFD, events: unanswered.isEmpty ? Int16(POLLIN) : Int16(POLLOUT), revents: 0),
                pollfd(fd: supervisor.rawFD, events: Int16(POLLIN), revents: 0),
            ]
            if let program {
                fds.append(pollfd(fd: program.descriptor, events: Int16(POLLIN) | (program.wantsToWrite ? Int16(POLLOUT) : 0), revents: 0))
            }
            var timeout: Int32 = -1
            if let oldest = waiting.first {
                timeout = Int32(max(0, min(Int64(Int32.max), oldest.since + hangMs - monotonicMilliseconds())))
            }
            if poll(&fds, nfds_t(fds.count), timeout) < 0 && errno != EINTR {
                logger.error("poll failed: errno \(errno)")
                return 1
            }
            if let oldest = waiting.first, monotonicMilliseconds() - oldest.since >= hangMs {
                logger.error("the policy program did not answer for \(oldest.id) within \(hangMs) ms; exiting so that the supervisor restarts the helper and the program")
                return programFailed
            }

            // The supervisor: reload, or EOF.
            if fds[1].revents != 0 {
                do {
                    while let frame = try supervisor.receive() {
                        guard frame.type == .authReload else { continue }
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

            // The program: answers (in order), or EOF.
            if let current = program, fds.count > 2, fds[2].revents != 0 {
                do {
                    try current.flush()
                    for line in try current.readLines() {
                        guard !waiting.isEmpty else {
                            logger.warning("the policy program answered a question nobody asked; ignored: \(line.prefix(200))")
                            continue
                        }
                        let query = waiting.removeFirst()
                        answer(query.requestID, Self.verdict(fromProgram: line, logger: logger), id: query.id)
                    }
                } catch {
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
                                    answer(frame.requestID, AuthVerdict(allow: false, reason: "Error on Auth"), id: query.id)
                                    continue
                                }
                                waiting.append(Waiting(requestID: frame.requestID, id: query.id, since: monotonicMilliseconds()))
                                do {
                                    try program.send(line: JSONLine.object([
                                        ("type", "auth"), ("id", query.id), ("token", query.token), ("key", query.key),
                                        ("ip", query.ip), ("version", query.version),
                                    ]))
                                } catch {
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

    /// `{"allow":true}` → allow; `{"allow":false,"reason":"…"}` → deny with the reason (default
    /// "Invalid ID"); anything else, including `{"error":…}`, → deny "Error on Auth".
    static func verdict(fromProgram line: String, logger: Logger) -> AuthVerdict {
        guard let fields = JSONLine.parseObject(line), case .bool(let allow)? = fields["allow"] else {
            logger.warning("the policy program's answer is not {\"allow\":true|false,…}: \(line.prefix(200))")
            return AuthVerdict(allow: false, reason: "Error on Auth")
        }
        if allow { return AuthVerdict(allow: true) }
        var reason = AuthPolicy.invalidID
        if case .string(let text)? = fields["reason"], !text.isEmpty {
            reason = String(decoding: Array(text.utf8.prefix(AuthVerdict.maxReasonLength)), as: UTF8.self)
            if reason.utf8.count > AuthVerdict.maxReasonLength || reason.isEmpty { reason = AuthPolicy.invalidID }
        }
        return AuthVerdict(allow: false, reason: reason)
    }

    static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
