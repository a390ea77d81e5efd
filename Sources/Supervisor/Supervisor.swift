import CShim
import Glibc
public import IPC
public import Logging
import Sandbox

/// What the supervisor needs: where to listen, what to tell the broker, how to start it.
public struct SupervisorConfiguration: Sendable {
    /// Listen addresses; nil listens on every address (IPv6 and IPv4).
    public var host: String?
    public var port: UInt16
    /// The broker's settings, sent in its `hello` frame.
    public var broker: BrokerSettings
    /// The binary to start for the broker role (this same binary).
    public var executable: String
    /// The broker's argv, starting with argv[0]; the role shows on its command line.
    public var brokerArguments: [String]
    /// How long a draining broker may take to close its peers after SIGTERM.
    public var drainDeadlineMs: UInt32
    /// Re-reads the configuration on SIGHUP and returns the broker's new settings; nil when
    /// there is nothing to re-read (settings came from the command line only).
    public var reload: (@Sendable () throws -> BrokerSettings)?
    /// The TLS key and certificate (read at start and on every SIGHUP); nil serves no TLS.
    public var tls: TLSFiles?
    /// With `tls`: a TLS listener on this port beside the plain one on `port`. Without it, the
    /// `port` listener itself is TLS (as in peerjs-server). Ignored under socket activation,
    /// where a socket named `https` is TLS and any other is plain.
    public var httpsPort: UInt16?
    /// The address of the `httpsPort` listener; nil means the same as `host`.
    public var httpsHost: String?

    /// The empty directory the broker chroots into (also passed in `brokerArguments`); created
    /// root-owned 0555 when missing and this process runs as root. nil: none.
    public var chrootDirectory: String?
    /// The broker's user (also passed in `brokerArguments`); checked before the first spawn when
    /// the broker will be able to drop to it.
    public var brokerUser: String?
    /// The auth helper's argv (starting with argv[0]); nil: no helper, everyone is allowed.
    public var authArguments: [String]?
    /// The auth helper's user (also in `authArguments`); checked before the first spawn.
    public var authUser: String?

    public init(host: String?, port: UInt16, broker: BrokerSettings, executable: String, brokerArguments: [String],
                drainDeadlineMs: UInt32 = 3000, reload: (@Sendable () throws -> BrokerSettings)? = nil,
                tls: TLSFiles? = nil, httpsPort: UInt16? = nil, httpsHost: String? = nil,
                chrootDirectory: String? = nil, brokerUser: String? = nil,
                authArguments: [String]? = nil, authUser: String? = nil) {
        self.host = host
        self.port = port
        self.broker = broker
        self.executable = executable
        self.brokerArguments = brokerArguments
        self.drainDeadlineMs = drainDeadlineMs
        self.reload = reload
        self.tls = tls
        self.httpsPort = httpsPort
        self.httpsHost = httpsHost
        self.chrootDirectory = chrootDirectory
        self.brokerUser = brokerUser
        self.authArguments = authArguments
        self.authUser = authUser
    }
}

/// The privileged parent (OpenBSD httpd/relayd style): owns the listening sockets, accepts,
/// and hands each connection to the broker without reading a byte of it; starts, watches and
/// restarts the broker; turns signals into drain and shutdown. One thread, one poll(2) loop.
public final class Supervisor {
    private struct BrokerProcess {
        let pid: pid_t
        var channel: HandoffChannel?
        var ready = false
        let startedAt: Int64
        /// Connections the broker has room for and has not been handed yet (its `credit`
        /// frames); nothing is handed over without credit.
        var credits = 0
        /// Whether the broker has granted credit at least once (before that, nothing is accepted).
        var credited = false
        /// The broker said it is full (a `credit` of 0: every slot holds a peer, none can be
        /// freed): while it has no credit, new connections are accepted and closed at once
        /// instead of waiting in the backlog. A broker that is only slow leaves them waiting.
        var full = false
    }

    /// The auth helper: its own process group (it and its policy program die together), a channel
    /// for `authReload` whose EOF tells the helper that the supervisor is gone.
    private struct AuthProcess {
        let pid: pid_t
        var channel: HandoffChannel?
    }

    /// A connection accepted but not yet taken by the broker: it waits for the next broker
    /// rather than being dropped.
    private struct PendingHandoff {
        let descriptor: Int32
        let handoff: ConnectionHandoff
    }

    private let configuration: SupervisorConfiguration
    /// The broker settings in force: the configured ones, or the last successful reload's.
    private var brokerSettings: BrokerSettings
    private let logger: Logger
    private var watchdogIntervalMs: Int64?
    private var lastWatchdog: Int64 = 0
    private var listeners: [Listener] = []
    private var broker: BrokerProcess?
    private var auth: AuthProcess?
    private var authRestartAt: Int64?
    private var authCrashes: [Int64] = []
    private var restartAt: Int64?
    private var crashes: [Int64] = []
    private var pending: PendingHandoff?
    private var acceptPausedUntil: Int64 = 0
    /// Connections accepted and closed at once because the broker had no room, since the last
    /// log line about it; and when that line was written.
    private var shed = 0
    private var shedLoggedAt: Int64 = 0
    /// Failed accepts (EMFILE, ENFILE, ENOBUFS) since the last log line about them.
    private var acceptFailures = 0
    private var acceptFailureLoggedAt: Int64 = 0
    static let repeatLogIntervalMs: Int64 = 10_000
    private var drainingSince: Int64?
    private var announced = false
    /// The checked TLS material (kept so that a restarted broker gets it too), and which
    /// generation of it the broker acknowledged (`tlsAck`).
    private var tls = TLSHandoff()
    private var tlsMaterial: TLSMaterial? { tls.current }
    /// Set when stderr is a regular file (see ``LogRelay``).
    private let logRelay = LogRelay.ifStderrIsAFile()
    static let setupSendDeadlineMs: Int64 = 2000
    static let startupDeadlineMs: Int64 = 10_000
    static let crashWindowMs: Int64 = 60_000
    static let crashLimit = 5

    public init(configuration: SupervisorConfiguration, logger: Logger) {
        self.configuration = configuration
        self.brokerSettings = configuration.broker
        self.logger = logger
    }

    /// Runs until SIGTERM/SIGINT (returns 0) or a fatal condition (throws).
    public func run() throws(SupervisorError) -> Int32 {
        let signals = try SignalSource([SIGCHLD, SIGTERM, SIGINT, SIGHUP])
        signal(SIGPIPE, SIG_IGN)
        // TLS files first: a bad key or certificate is reported before anything listens.
        if let files = configuration.tls {
            // No core dump, no ptrace by our own user, before the key is decrypted (issue 16).
            do { try SecretBytes.protectProcess() } catch { throw SupervisorError(.tls, "\(error)") }
            tls.offer(try TLSMaterial.load(files, logger: logger))
        }
        let activated = try Systemd.activatedListeners()
        if activated.isEmpty {
            listeners = try bindListeners()
        } else {
            listeners = activated.map { Listener.adopt(descriptor: $0.descriptor, name: $0.name) }
            let names = listeners.map { "\($0.name)=\($0.address):\($0.port)" }.joined(separator: " ")
            logger.info("socket activation: \(names)")
            if tlsMaterial == nil, listeners.contains(where: \.tls) {
                throw SupervisorError(.tls, "systemd passed a socket named `\(Listener.tlsName)` (FileDescriptorName=), which is served with TLS, but no --sslkey/--sslcert were given")
            }
            if tlsMaterial != nil, !listeners.contains(where: \.tls) {
                logger.warning("--sslkey/--sslcert are given but no socket is named `\(Listener.tlsName)`; every listener is plain HTTP (set FileDescriptorName=\(Listener.tlsName) on the TLS socket)")
            }
        }
        for listener in listeners {
            logger.info("listening on \(listener.address) port \(listener.port) (\(listener.name), \(listener.tls ? "TLS" : "plain"))")
        }
        if brokerSettings.proxied, brokerSettings.trustedProxies.isEmpty {
            logger.notice("--proxied without a list believes X-Forwarded-For from every connection: a client that reaches this port directly can name any address (and escape the per-address limits); listen where only the proxy reaches, or name it: --proxied=ADDR")
        }
        watchdogIntervalMs = Systemd.watchdogIntervalMs()
        try prepareBrokerSandbox()
        try spawnBroker()

        while true {
            var fds = [pollfd(fd: signals.descriptor, events: Int16(POLLIN), revents: 0)]
            if let channel = broker?.channel {
                // Without credit, a credit frame (POLLIN) comes first; after ENOBUFS, the pause.
                let waitsForRoom = pending != nil && broker?.credits ?? 0 > 0 && monotonicMilliseconds() >= acceptPausedUntil
                fds.append(pollfd(fd: channel.rawFD, events: Int16(POLLIN) | (waitsForRoom ? Int16(POLLOUT) : 0), revents: 0))
            }
            if let channel = auth?.channel {
                fds.append(pollfd(fd: channel.rawFD, events: Int16(POLLIN), revents: 0))
            }
            if let logRelay {
                fds.append(pollfd(fd: logRelay.readEnd, events: Int16(POLLIN), revents: 0))
            }
            let now = monotonicMilliseconds()
            let accepting = broker?.ready == true && broker?.credited == true && brokerHasRoom() && pending == nil
                && drainingSince == nil && now >= acceptPausedUntil
            if accepting {
                for listener in listeners { fds.append(pollfd(fd: listener.descriptor, events: Int16(POLLIN), revents: 0)) }
            }
            let timeout = nextTimeout(now: now)
            let ready = poll(&fds, nfds_t(fds.count), timeout)
            if ready < 0 && errno != EINTR {
                logger.error("poll failed: \(SupervisorError.errnoText())")
            }

            if let logRelay, fds.contains(where: { $0.fd == logRelay.readEnd && $0.revents != 0 }) {
                logRelay.drain()
            }
            if fds[0].revents != 0 {
                for signal in signals.pending() {
                    if let code = try handle(signal: signal) { return code }
                }
            }
            if let channel = broker?.channel, let entry = fds.first(where: { $0.fd == channel.rawFD }), entry.revents != 0 {
                if entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { readFromBroker() }
                if entry.revents & Int16(POLLOUT) != 0 { flushPending() }
            }
            if let channel = auth?.channel, let entry = fds.first(where: { $0.fd == channel.rawFD }), entry.revents != 0 {
                readFromAuth()
            }
            if accepting {
                for entry in fds.dropFirst() where entry.revents & Int16(POLLIN) != 0 {
                    if let listener = listeners.first(where: { $0.descriptor == entry.fd }) { acceptConnections(on: listener) }
                }
            }
            if let code = try checkTimers(now: monotonicMilliseconds()) { return code }
        }
    }

    /// Binds `--port` (TLS when key and certificate are given without `--https-port`) and,
    /// with `--https-port`, a TLS listener beside it (on `--https-host`, if given).
    private func bindListeners() throws(SupervisorError) -> [Listener] {
        guard let httpsPort = configuration.httpsPort else {
            return try Listener.bind(host: configuration.host, port: configuration.port, tls: configuration.tls != nil)
        }
        guard configuration.tls != nil else {
            throw SupervisorError(.tls, "--https-port needs --sslkey and --sslcert")
        }
        let plain = try Listener.bind(host: configuration.host, port: configuration.port, tls: false)
        do {
            return plain + (try Listener.bind(host: configuration.httpsHost ?? configuration.host, port: httpsPort, tls: true))
        } catch {
            for listener in plain { close(listener.descriptor) }
            throw error
        }
    }

    // MARK: - Broker lifecycle

    /// Creates the broker's chroot directory (root-owned, 0555, empty) when it is missing and
    /// this process runs as root (never through a symlink), and checks the broker's user exists
    /// when the broker will be able to drop to it — a clear error now instead of a broker crash
    /// loop. When the children could drop privileges, a missing or unsuitable directory stops
    /// the start (fail closed), as does uid 0 without the capabilities to leave it.
    private func prepareBrokerSandbox() throws(SupervisorError) {
        do throws(SandboxError) {
            guard PrivilegeDrop.canDrop(capabilities: try PrivilegeDrop.effectiveCapabilities()) else {
                guard getuid() != 0, geteuid() != 0 else {
                    throw SandboxError(.capabilities, "peerjs runs as root without CAP_SETUID and CAP_SYS_CHROOT, so its broker could not change user; start it as root with its capabilities, or as an unprivileged user")
                }
                return
            }
            guard let directory = configuration.chrootDirectory else {
                throw SandboxError(.chroot, "peerjs can drop privileges but has no chroot directory for the broker; pass --chroot")
            }
            if geteuid() == 0, try PrivilegeDrop.createEmptyRoot(directory) {
                logger.info("created the broker's chroot directory \(directory)")
            }
            guard try PrivilegeDrop.checkEmptyRoot(directory) else {
                throw SandboxError(.chroot, PrivilegeDrop.missingRootMessage(directory))
            }
            if let user = configuration.brokerUser { _ = try PrivilegeDrop.lookUp(user: user) }
            if configuration.authArguments != nil, let user = configuration.authUser { _ = try PrivilegeDrop.lookUp(user: user, role: SeccompPolicy.auth.role) }
        } catch {
            throw SupervisorError(.sandbox, error.message)
        }
    }

    /// The broker's and the helper's environment: PATH, LANG and JOURNAL_STREAM (their stderr is
    /// the journal's when it is ours), nothing else of the supervisor's.
    static var childEnvironment: [String] { RoleSpawner.minimalEnvironment(passing: ["JOURNAL_STREAM"]) }

    private func spawnBroker() throws(SupervisorError) {
        restartAt = nil
        let (mine, theirs) = try wrap { () throws(IPCError) in try HandoffChannel.pair() }
        let pid: pid_t
        do {
            pid = try RoleSpawner.spawn(
                executable: configuration.executable, arguments: configuration.brokerArguments,
                fdMap: [(parent: theirs.rawFD, child: 3)], environment: Self.childEnvironment, stderr: logRelay?.writeEnd)
        } catch {
            throw SupervisorError(.spawn, "cannot start the broker (\(configuration.executable)): \(error)")
        }
        _ = consume theirs
        try wrap { () throws(IPCError) in try mine.setNonBlocking(true) }
        do {
            // The setup phase: TLS material (if any), then hello, which ends it.
            tls.brokerStarted()
            if tlsMaterial != nil { try sendTLSMaterial(over: mine) }
            try mine.send(brokerSettings)
        } catch {
            logger.error("cannot send hello to the broker: \(error)")
        }
        broker = BrokerProcess(pid: pid, channel: mine, startedAt: monotonicMilliseconds())
        logger.info("broker started pid=\(pid)")
        // A new broker gets a new helper: the old helper's channel ended with the old broker.
        startAuthHelper()
    }

    // MARK: - Auth helper

    /// Starts the auth helper (replacing a running one) with a fresh broker↔helper socketpair:
    /// the helper gets its end as fd 3 (and its supervisor channel as fd 4), the running broker
    /// gets the other end in an `authChannel` frame — so a helper restart drops no peer.
    private func startAuthHelper() {
        guard let arguments = configuration.authArguments else { return }
        authRestartAt = nil
        if let old = auth {
            auth = nil
            kill(-old.pid, SIGKILL)  // with its policy program; reaped as an unknown child
        }
        guard let brokerChannel = broker?.channel else { return }
        do {
            let (brokerEnd, helperEnd) = try HandoffChannel.pair(roles: (.broker, .auth))
            let (mine, theirs) = try HandoffChannel.pair(roles: (.supervisor, .auth))
            let pid = try RoleSpawner.spawn(
                executable: configuration.executable, arguments: arguments,
                fdMap: [(parent: helperEnd.rawFD, child: 3), (parent: theirs.rawFD, child: 4)],
                environment: Self.childEnvironment, newSession: true, stderr: logRelay?.writeEnd)
            auth = AuthProcess(pid: pid, channel: mine)
            try mine.setNonBlocking(true)
            try brokerChannel.send(AuthChannelHandoff(), fd: brokerEnd.rawFD)
            logger.info("auth helper started pid=\(pid)")
        } catch {
            logger.error("cannot start the auth helper or connect it to the broker (\(error)); registrations are denied until it runs")
            if let current = auth { kill(-current.pid, SIGKILL) }
            auth = nil
            scheduleAuthRestart(now: monotonicMilliseconds())
        }
    }

    private func readFromAuth() {
        guard let channel = auth?.channel else { return }
        do {
            if let frame = try channel.receive() {
                logger.error("the auth helper sent a \(frame.type) frame on the supervisor channel; restarting it")
            } else {
                auth?.channel = nil  // EOF: the helper is gone or going; SIGCHLD tells how
                return
            }
        } catch where error.code == .wouldBlock {
            return
        } catch {
            logger.error("the auth helper sent a bad frame (\(error)); restarting it")
        }
        if let current = auth { kill(-current.pid, SIGKILL) }
        auth?.channel = nil
    }

    /// A dead helper is restarted with capped backoff, never given up on: while it is down every
    /// registration is denied ("Error on Auth"), the peers already registered stay.
    private func scheduleAuthRestart(now: Int64) {
        authCrashes = authCrashes.filter { now - $0 < Self.crashWindowMs } + [now]
        let delay: Int64 = authCrashes.count <= 1 ? 0 : min(5000, 100 << Int64(min(authCrashes.count - 2, 8)))
        authRestartAt = now + delay
        if delay > 0 { logger.warning("restarting the auth helper in \(delay) ms") }
    }

    /// Sends the current TLS material as one generation of `tlsChunk` frames, waiting (bounded)
    /// for room in the channel; the encoded key chunks are wiped once sent. The broker answers
    /// with a `tlsAck` (see ``TLSHandoff``).
    private func sendTLSMaterial(over channel: HandoffChannel) throws(IPCError) {
        guard let material = tlsMaterial else { return }
        var chunks: [TLSChunk]
        do {
            chunks = try material.chunks(generation: tls.currentGeneration)
        } catch {
            throw IPCError(.invalidArgument, error.description)
        }
        defer { for index in chunks.indices { TLSChunk.wipe(&chunks[index].data) } }
        let deadline = monotonicMilliseconds() + Self.setupSendDeadlineMs
        for chunk in chunks {
            while true {
                do {
                    try channel.send(chunk)  // the encoded copy of a key chunk is wiped by send
                    break
                } catch where error.code == .wouldBlock {
                    let left = deadline - monotonicMilliseconds()
                    guard left > 0 else { throw error }
                    var entry = pollfd(fd: channel.rawFD, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&entry, 1, Int32(left))
                }
            }
        }
        tls.sent(now: monotonicMilliseconds())
    }

    private func wrap<T>(_ body: () throws(IPCError) -> T) throws(SupervisorError) -> T {
        do { return try body() } catch { throw SupervisorError(.spawn, "cannot set up the broker channel: \(error)") }
    }

    private func readFromBroker() {
        guard let channel = broker?.channel else { return }
        for _ in 0..<64 {
            do {
                guard let frame = try channel.receive() else {
                    // EOF: the broker is gone or going; SIGCHLD tells how.
                    broker?.channel = nil
                    return
                }
                switch frame.type {
                case .ready:
                    brokerReady()
                case .credit:
                    let credit = try frame.decode(AdmissionCredit.self)
                    broker?.credits += Int(credit.count)
                    broker?.credited = true
                    broker?.full = credit.count == 0
                    flushPending()
                case .tlsAck:
                    let ack = try frame.decode(TLSAck.self)
                    guard tls.answer(ack, brokerPID: broker?.pid, logger: logger) else {
                        logger.error("broker answered TLS generation \(ack.generation), which it was not sent or already answered; restarting it")
                        killBroker()
                        return
                    }
                default:
                    logger.error("broker sent an unexpected \(frame.type) frame; restarting it")
                    killBroker()
                    return
                }
            } catch where error.code == .wouldBlock {
                return
            } catch {
                logger.error("broker sent a bad frame (\(error)); restarting it")
                killBroker()
                return
            }
        }
    }

    private func brokerReady() {
        guard let current = broker, !current.ready else { return }
        broker?.ready = true
        if !announced, let first = listeners.first {
            announced = true
            let host = configuration.host ?? first.address
            logger.notice("Started PeerServer on \(host), port: \(first.port), path: \(brokerSettings.path)")
            Systemd.notify("READY=1\nSTATUS=serving; broker pid \(current.pid)\nMAINPID=\(getpid())")
        } else {
            logger.notice("broker pid=\(current.pid) ready; accepting again")
            Systemd.notify("STATUS=serving; broker restarted as pid \(current.pid)")
        }
        flushPending()
    }

    private func killBroker() {
        guard let current = broker else { return }
        kill(current.pid, SIGKILL)
        broker?.channel = nil
        broker?.ready = false
    }

    private func reapChildren() -> Bool {
        var brokerEnded = false
        for _ in 0..<64 {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            guard pid > 0 else { break }
            if pid == auth?.pid {
                auth = nil
                kill(-pid, SIGKILL)  // its policy program, if any, goes with it
                if drainingSince == nil {
                    logger.error("auth helper pid=\(pid) \(ChildExit(status: status)); restarting it")
                    scheduleAuthRestart(now: monotonicMilliseconds())
                }
                continue
            }
            guard pid == broker?.pid else {
                logger.info("reaped child pid=\(pid): \(ChildExit(status: status))")
                continue
            }
            brokerEnded = true
            broker = nil
            let exit = ChildExit(status: status)
            if drainingSince != nil {
                logger.info("broker pid=\(pid) \(exit)")
            } else {
                logger.error("broker pid=\(pid) \(exit); starting a new one")
            }
        }
        return brokerEnded
    }

    private func scheduleRestart(now: Int64) throws(SupervisorError) {
        crashes = crashes.filter { now - $0 < Self.crashWindowMs } + [now]
        if crashes.count > Self.crashLimit {
            throw SupervisorError(
                .crashLoop,
                "the broker died \(crashes.count) times within \(Self.crashWindowMs / 1000) s; giving up so that the service manager's restart policy takes over (see the log lines above for why it died)")
        }
        let delay: Int64 = crashes.count <= 1 ? 0 : min(5000, 100 << Int64(crashes.count - 2))
        restartAt = now + delay
        if delay > 0 { logger.warning("restarting the broker in \(delay) ms") }
    }

    // MARK: - Accept and hand off

    /// Whether a new connection can be accepted now: the broker has credit for it, or has said
    /// it is full (then it is accepted and closed at once).
    private func brokerHasRoom() -> Bool {
        guard let broker else { return false }
        return broker.credits > 0 || broker.full
    }

    private func acceptConnections(on listener: Listener) {
        for _ in 0..<256 {
            guard pending == nil, let channel = broker?.channel, brokerHasRoom() else { return }
            var storage = sockaddr_storage()
            var length = UInt32(MemoryLayout<sockaddr_storage>.size)
            let fd = cshim_accept4(listener.descriptor, &storage, &length)
            if fd < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED:
                    return
                default:
                    // EMFILE, ENFILE, ENOBUFS: pause accepting briefly instead of spinning, and
                    // say so once per interval rather than ten times a second.
                    let reason = SupervisorError.errnoText()
                    pauseAccepting { "accept on \(listener.address):\(listener.port) failed \($0) time(s): \(reason); pausing 100 ms each time (raise LimitNOFILE= or ulimit -n)" }
                    return
                }
            }
            guard broker?.credits ?? 0 > 0 else {
                // The broker is at its connection budget: refuse now rather than leave the client
                // waiting in the backlog (issue 15; README "Limits").
                close(fd)
                shed += 1
                let now = monotonicMilliseconds()
                if now - shedLoggedAt >= Self.repeatLogIntervalMs {
                    logger.warning("the broker is at its connection budget (--concurrent_limit + --handshake_limit, or its descriptor limit); closed \(shed) new connection(s)")
                    shed = 0
                    shedLoggedAt = now
                }
                continue
            }
            let handoff = ConnectionHandoff(peer: PeerAddress(storage), tls: listener.tls)
            hand(PendingHandoff(descriptor: fd, handoff: handoff), over: channel)
        }
    }

    /// Stops accepting for 100 ms after a failure that would repeat at once (EMFILE, ENOBUFS…),
    /// and logs it once per interval with how often it happened (`message` gets the count).
    private func pauseAccepting(_ message: (Int) -> String) {
        let now = monotonicMilliseconds()
        acceptPausedUntil = now + 100
        acceptFailures += 1
        if now - acceptFailureLoggedAt >= Self.repeatLogIntervalMs {
            logger.error("\(message(acceptFailures))")
            acceptFailures = 0
            acceptFailureLoggedAt = now
        }
    }

    private func hand(_ connection: PendingHandoff, over channel: HandoffChannel) {
        do {
            // ConnectionHandoff.encodeChecked is its encode() (the address is fixed-size): no
            // decode-and-compare on this path.
            try channel.send(connection.handoff, fd: connection.descriptor)
            close(connection.descriptor)
            broker?.credits -= 1
        } catch where error.code == .wouldBlock {
            pending = connection
        } catch where [ENOBUFS, ENOMEM, ETOOMANYREFS].contains(error.code.errno ?? 0) {
            // Out of kernel memory, or too many descriptors in flight for this user: the channel
            // is fine; keep the connection and pause accepting briefly, as for EMFILE.
            pending = connection
            pauseAccepting { "hand-off to the broker failed \($0) time(s): \(error); pausing 100 ms each time" }
        } catch {
            // The broker is going away; keep the connection for the next one.
            pending = connection
            logger.warning("hand-off to the broker failed: \(error)")
            broker?.channel = nil
        }
    }

    private func flushPending() {
        guard let connection = pending, let channel = broker?.channel, broker?.ready == true, broker?.credits ?? 0 > 0
        else { return }
        pending = nil
        hand(connection, over: channel)
    }

    // MARK: - Signals and timers

    private func handle(signal: Int32) throws(SupervisorError) -> Int32? {
        switch signal {
        case SIGCHLD:
            if reapChildren() {
                if drainingSince != nil { return finish() }
                try scheduleRestart(now: monotonicMilliseconds())
            }
        case SIGTERM, SIGINT:
            if drainingSince != nil {
                logger.warning("second stop signal: stopping now")
                killBroker()
                return finish()
            }
            startDrain()
            if broker == nil { return finish() }
        case SIGHUP:
            reloadConfiguration()
        default:
            break
        }
        return nil
    }

    /// SIGHUP: re-read the configuration and the TLS files and hand the broker its new settings
    /// and material. A broken file keeps what is running. Listen addresses and the TLS file
    /// paths change only on restart.
    private func reloadConfiguration() {
        if let channel = auth?.channel {
            do {
                try channel.send(AuthReloadRequest())
                logger.notice("SIGHUP: the auth helper re-reads its policy files")
            } catch {
                logger.error("could not ask the auth helper to reload (\(error))")
            }
        }
        guard configuration.reload != nil || configuration.tls != nil else {
            if configuration.authArguments != nil { return }
            logger.notice("SIGHUP: no configuration file is in use; settings come from the command line, nothing to re-read")
            return
        }
        Systemd.notify("RELOADING=1\nMONOTONIC_USEC=\(Systemd.monotonicMicroseconds())")
        defer { Systemd.notify("READY=1") }
        if let files = configuration.tls { reloadTLS(files) }
        guard let reload = configuration.reload else { return }
        let settings: BrokerSettings
        do {
            settings = try reload()
        } catch {
            logger.error("reload failed, keeping the running configuration: \(error)")
            return
        }
        brokerSettings = settings
        do {
            try broker?.channel?.send(BrokerReload(settings))
            logger.notice("configuration reloaded")
        } catch {
            logger.error("could not hand the new configuration to the broker (\(error)); it gets it when it restarts")
        }
    }

    /// Re-reads key and certificate; on success the broker uses them for new handshakes, while
    /// established connections keep theirs (a certificate renewal drops no one).
    private func reloadTLS(_ files: TLSFiles) {
        let material: TLSMaterial
        do {
            material = try TLSMaterial.load(files, logger: logger)
        } catch {
            logger.error("TLS reload failed, keeping the running certificate and key: \(error)")
            return
        }
        tls.offer(material)
        guard let channel = broker?.channel else { return }  // the next broker is sent it
        do {
            try sendTLSMaterial(over: channel)
            logger.info("TLS generation \(tls.currentGeneration) sent to the broker; the one in force changes when the broker takes it")
        } catch {
            tls.sendFailed(error, logger: logger)
        }
    }

    private func startDrain() {
        logger.notice("stopping: no new connections; the broker closes its peers")
        Systemd.notify("STOPPING=1\nSTATUS=draining")
        drainingSince = monotonicMilliseconds()
        for listener in listeners { close(listener.descriptor) }
        listeners = []
        if let pending { close(pending.descriptor) }
        pending = nil
        do {
            try broker?.channel?.send(DrainRequest(deadlineMs: configuration.drainDeadlineMs))
        } catch {
            killBroker()
        }
    }

    private func finish() -> Int32 {
        if let helper = auth {
            kill(-helper.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(helper.pid, &status, 0)
            auth = nil
        }
        if let current = broker {
            kill(current.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(current.pid, &status, 0)
        }
        logRelay?.drain()  // the children's last lines before ours
        logger.notice("stopped")
        return 0
    }

    private func checkTimers(now: Int64) throws(SupervisorError) -> Int32? {
        tls.checkDeadline(now: now, logger: logger)
        if let interval = watchdogIntervalMs, now - lastWatchdog >= interval / 2 {
            lastWatchdog = now
            Systemd.notify("WATCHDOG=1")
        }
        if let since = drainingSince, now - since > Int64(configuration.drainDeadlineMs) + 2000 {
            logger.warning("the broker did not finish draining in time; killing it")
            return finish()
        }
        if let restartAt, now >= restartAt, broker == nil, drainingSince == nil {
            try spawnBroker()
        }
        if let authRestartAt, now >= authRestartAt, auth == nil, broker?.channel != nil, drainingSince == nil {
            startAuthHelper()
        }
        if let current = broker, !current.ready, now - current.startedAt > Self.startupDeadlineMs {
            logger.error("broker pid=\(current.pid) did not report ready within \(Self.startupDeadlineMs) ms; killing it")
            killBroker()
        }
        return nil
    }

    private func nextTimeout(now: Int64) -> Int32 {
        var deadline: Int64 = now + 1000
        if let restartAt { deadline = min(deadline, restartAt) }
        if let authRestartAt { deadline = min(deadline, authRestartAt) }
        if acceptPausedUntil > now { deadline = min(deadline, acceptPausedUntil) }
        if let due = tls.answerDue { deadline = min(deadline, due) }
        if let since = drainingSince { deadline = min(deadline, since + Int64(configuration.drainDeadlineMs) + 2001) }
        if let interval = watchdogIntervalMs { deadline = min(deadline, lastWatchdog + interval / 2) }
        return Int32(max(0, deadline - now))
    }
}
