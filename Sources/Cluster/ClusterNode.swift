import IPC
import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// One instance's member of the cluster: the only code that talks to PostgreSQL. It claims and
/// releases this instance's ids in the peer directory, keeps their rows fresh, relays frames to
/// other instances with NOTIFY (large ones through `peerjs_relay`), listens on its own channel
/// and the directory's, and tells the broker what changes. When the database goes away it says
/// so (the broker then refuses new ids) and reconnects with backoff; local peers never notice.
actor ClusterNode {
    struct LocalID: Hashable {
        var key: String
        var id: String
    }

    private let settings: ClusterSettings
    private let logger: Logger
    private let group: any EventLoopGroup
    private let broker: BrokerLink
    private let instanceChannel: String
    static let directoryChannel = "peerjs.dir"

    private var writer: PostgresConnection?
    /// Connections for claims and releases, one per partition of the ids: claims of different
    /// ids run at once, while the claims and releases of one id keep the broker's order.
    private var claimers: [PostgresConnection] = []
    /// The last task of each partition; the next one of that partition waits for it.
    private var chains: [Task<Void, Never>?] = Array(repeating: nil, count: ClusterNode.partitions)
    static let partitions = 3
    private var listener: PostgresConnection?
    private var listenTasks: [Task<Void, Never>] = []
    private var listenerFailed: String?
    /// The ids this instance holds, with their token hashes: claimed again after a reconnect.
    private var local: [LocalID: [UInt8]] = [:]
    private var available = false
    /// Frames for other instances, by instance, waiting for the next NOTIFY.
    private var outbox: [String: [[UInt8]]] = [:]
    private var outboxBytes = 0
    private var flushing = false
    /// Directory records (`+`/`-`) waiting for the next NOTIFY on `peerjs.dir`.
    private var announcements: [[UInt8]] = []
    private var pingNonce: UInt64 = 0
    private var lastNonceSeen: UInt64 = 0
    private var lastPingSeen = ContinuousClock.now
    /// Instances whose rows had all expired at the last check (told to the broker once).
    private var reportedGone: Set<String> = []
    /// The broker link's loss counters at the last report.
    private var reported = 0

    /// The most bytes of frames waiting for other instances; past it a frame is dropped (logged).
    static let maxOutboxBytes = 8 << 20
    static let pingInterval = Duration.seconds(2)
    /// No self-ping for this long: the listener is stuck, reconnect.
    static let pingDeadline = Duration.seconds(10)

    init(settings: ClusterSettings, logger: Logger, group: any EventLoopGroup, broker: BrokerLink) {
        self.settings = settings
        self.logger = logger
        self.group = group
        self.broker = broker
        instanceChannel = "peerjs.i.\(settings.instance)"
    }

    private var expiry: Int { Int(settings.expirySeconds) }

    // MARK: - Connection life

    /// Connects, serves until the connection fails, reconnects with backoff: for ever.
    func run() async {
        var delay = Duration.milliseconds(500)
        var attempt = 0
        while !Task.isCancelled {
            attempt += 1
            do {
                try await connect()
                if attempt > 1 { logger.notice("peer directory reconnected (attempt \(attempt))") }
                attempt = 0
                delay = .milliseconds(500)
                try await maintain()
            } catch {
                logger.warning("peer directory unavailable (\(Self.describe(error))); retrying in \(delay)")
            }
            await disconnect()
            try? await pause(for: delay)
            delay = min(delay * 2, .seconds(30))
        }
    }

    private func open() async throws -> PostgresConnection {
        var lastError: (any Error)?
        for address in settings.addresses {
            do {
                let target = try SocketAddress(ipAddress: address, port: Int(settings.port))
                let channel = try await ClientBootstrap(group: group)
                    .connectTimeout(.seconds(3))
                    .connect(to: target).get()
                var configuration = PostgresConnection.Configuration(
                    establishedChannel: channel, username: settings.user,
                    password: settings.password.isEmpty ? nil : settings.password, database: settings.database)
                // No statement and no lock wait may hold the role up for long: the watchdog's
                // deadline is 10 s, and a claim's client waits 5 s.
                configuration.options.additionalStartupParameters = [
                    ("application_name", "peerjs \(settings.instance)"), ("statement_timeout", "4000"), ("lock_timeout", "3000"),
                ]
                return try await PostgresConnection.connect(
                    on: channel.eventLoop, configuration: configuration, id: 1, logger: Logger(label: "postgres", factory: { _ in SwiftLogNoOpLogHandler() }))
            } catch {
                lastError = error
            }
        }
        throw lastError ?? ClusterError("no database address to connect to")
    }

    private func connect() async throws {
        let writer = try await open()
        self.writer = writer
        try await migrate(writer)
        // Rows under this name that this role does not hold (an earlier run's, or a release
        // that could not reach the database) go; the ids it holds are claimed again below.
        try await execute(DirectorySchema.dropInstance, [settings.instance])
        var claimers: [PostgresConnection] = []
        for _ in 0..<Self.partitions { claimers.append(try await open()) }
        self.claimers = claimers
        let listener = try await open()
        self.listener = listener
        listenerFailed = nil
        lastPingSeen = .now
        for channel in [instanceChannel, Self.directoryChannel] {
            listenTasks.append(Task { await self.listen(on: channel, listener) })
        }
        // A query or a LISTEN that hangs (a dead network: no reset ever comes) is cut short
        // here, beside whatever waits for it.
        listenTasks.append(Task { await self.watch([writer, listener] + claimers) })
        // LISTEN is in force once a ping comes back: only then is the snapshot complete.
        try await waitForOwnPing()
        for (id, hash) in local where local[id] == hash {
            guard await claim(requestID: 0, ClusterClaim(key: id.key, id: id.id, tokenHash: hash, limit: 0)) else {
                throw ClusterError("claiming this instance's ids again failed")
            }
        }
        try await announceDirectory()
        available = true
        broker.send(ClusterState(available: true))
        startFlush()  // what was announced while away
    }

    /// Closes both connections when no own ping has come back for ``pingDeadline``: every query
    /// waiting on them fails, and `run()` reconnects.
    private func watch(_ connections: [PostgresConnection]) async {
        while !Task.isCancelled {
            do { try await pause(for: .seconds(1)) } catch { return }
            if ContinuousClock.now - lastPingSeen > Self.pingDeadline + .seconds(2) {
                logger.warning("the database has not answered for \(Self.pingDeadline); closing its connections")
                for connection in connections { connection.close().whenComplete { _ in } }
                return
            }
        }
    }

    private func waitForOwnPing() async throws {
        // The LISTENs are issued by their own tasks: ping until one comes back (a ping sent
        // before the LISTEN is in force is simply not heard).
        let before = lastPingSeen
        for round in 0..<100 {
            if round % 10 == 0 { try await ping() }
            if lastPingSeen != before { return }
            if let failure = listenerFailed { throw ClusterError("LISTEN failed: \(failure)") }
            try await pause(for: .milliseconds(20))
        }
        throw ClusterError("the listener did not hear its own notification within 2 s")
    }

    private func disconnect() async {
        if available {
            available = false
            broker.send(ClusterState(available: false))
        }
        for task in listenTasks { task.cancel() }
        listenTasks = []
        try? await listener?.close()
        try? await writer?.close()
        for claimer in claimers { try? await claimer.close() }
        listener = nil
        writer = nil
        claimers = []
        let lost = outbox.values.reduce(0) { $0 + $1.count }
        if lost > 0 { logger.warning("\(lost) frames for other instances were not sent (the database went away)") }
        outbox = [:]
        outboxBytes = 0
        announcements = []
    }

    /// Creates or upgrades the schema under an advisory lock, in one transaction.
    private func migrate(_ connection: PostgresConnection) async throws {
        _ = try await connection.simpleQuery("BEGIN").get()
        do {
            // The lock first: two instances creating the version table at once would collide.
            _ = try await connection.simpleQuery(DirectorySchema.lockSchema).get()
            _ = try await connection.simpleQuery(DirectorySchema.bootstrap).get()
            var version = 0
            for try await row in try await connection.query(PostgresQuery(unsafeSQL: DirectorySchema.currentVersion), logger: logger) {
                version = try row.decode(Int.self)
            }
            guard version <= DirectorySchema.version else {
                throw ClusterError("the peer directory's schema is version \(version); this peerjs knows up to \(DirectorySchema.version): upgrade peerjs")
            }
            for index in version..<DirectorySchema.version {
                for statement in DirectorySchema.statements(DirectorySchema.migrations[index] + ";" + DirectorySchema.setVersion(index + 1)) {
                    _ = try await connection.simpleQuery(statement).get()
                }
                logger.notice("peer directory schema migrated to version \(index + 1)")
            }
            _ = try await connection.simpleQuery("COMMIT").get()
        } catch {
            _ = try? await connection.simpleQuery("ROLLBACK").get()
            throw error
        }
    }

    /// Every live id of the other instances, to the broker, after a reset.
    private func announceDirectory() async throws {
        broker.send(ClusterPeerChange(.reset))
        for try await row in try await query(DirectorySchema.loadDirectory, [settings.instance], .int(expiry)) {
            let (instance, key, id) = try row.decode((String, String, String).self)
            let change = ClusterPeerChange(.registered, instance: instance, key: key, id: id)
            if Self.namesFit(.registered(instance: instance, key: key, id: id)) { broker.send(change) }
        }
        reportedGone = []
    }

    /// Refreshes, sweeps, pings and watches the listener until something fails.
    private func maintain() async throws {
        let refreshEvery = Duration.seconds(max(1, expiry / 3))
        var sinceRefresh = Duration.zero
        var sincePing = Duration.zero
        let tick = Duration.milliseconds(500)
        while !Task.isCancelled {
            try await pause(for: tick)
            sinceRefresh += tick
            sincePing += tick
            if let failure = listenerFailed { throw ClusterError("the listener connection failed: \(failure)") }
            if ContinuousClock.now - lastPingSeen > Self.pingDeadline {
                throw ClusterError("the listener has not heard its own notification for \(Self.pingDeadline); reconnecting")
            }
            if sincePing >= Self.pingInterval {
                sincePing = .zero
                try await ping()
            }
            if sinceRefresh >= refreshEvery {
                sinceRefresh = .zero
                try await refresh()
            }
        }
    }

    private func ping() async throws {
        pingNonce &+= 1
        try await notify(instanceChannel, ClusterRecord.ping(nonce: pingNonce).encoded)
    }

    /// Keeps this instance's rows live, deletes long-expired ones, and forgets the ids of
    /// instances that stopped refreshing.
    private func refresh() async throws {
        let dropped = broker.droppedCount
        if dropped != reported {
            logger.warning("the broker did not take \(dropped - reported) frames (it stopped reading its channel) since the last report; they are lost")
            reported = dropped
        }
        try await execute(DirectorySchema.refresh, [settings.instance])
        _ = try await query(DirectorySchema.sweep, [], .int(expiry)).collect()
        // An instance whose rows have all expired stopped refreshing them (it died, or lost the
        // database): its ids are free. (One with no rows has nothing to forget; a live one
        // refreshes all of its rows at once, so they never expire one by one.)
        var dead = Set<String>()
        for try await row in try await query(
            "SELECT instance FROM peerjs_peers WHERE instance <> $1::text GROUP BY instance HAVING max(refreshed) <= now() - make_interval(secs => $2::integer)",
            [settings.instance], .int(expiry))
        {
            dead.insert(try row.decode(String.self))
        }
        for gone in dead.subtracting(reportedGone) {
            logger.notice("instance \(gone) stopped refreshing its rows; its ids are free")
            broker.send(ClusterPeerChange(.instanceGone, instance: gone))
        }
        reportedGone = dead
    }

    // MARK: - The broker's requests

    /// Takes one of the broker's frames; `done` is called once it has been handled (the link
    /// then reads on). Claims and releases run in the partition of their id, after the earlier
    /// ones of that partition.
    func submit(_ event: BrokerLink.Event, done: @escaping @Sendable () -> Void) {
        let partition: Int
        switch event {
        case .claim(_, let claim): partition = Self.partition(key: claim.key, id: claim.id)
        case .release(let release): partition = Self.partition(key: release.key, id: release.id)
        case .send(let relay):
            enqueue(relay)
            done()
            return
        case .closed:
            done()
            return
        }
        let previous = chains[partition]
        chains[partition] = Task {
            await previous?.value
            switch event {
            case .claim(let requestID, let claim): await self.claim(requestID: requestID, claim, partition: partition)
            case .release(let release): await self.release(release, partition: partition)
            default: break
            }
            done()
        }
    }

    static func partition(key: String, id: String) -> Int {
        var hasher = Hasher()
        hasher.combine(key)
        hasher.combine(id)
        return Int(UInt(bitPattern: hasher.finalize()) % UInt(partitions))
    }

    /// Claims an id; answers the broker (request id 0: a claim again after a reconnect or a
    /// restart of this role, answered only when the id is lost).
    @discardableResult
    private func claim(requestID: UInt32, _ claim: ClusterClaim, partition: Int? = nil) async -> Bool {
        let id = LocalID(key: claim.key, id: claim.id)
        if requestID == 0 { local[id] = claim.tokenHash }  // held here: claimed again at every reconnect
        guard writer != nil, available || requestID == 0 else {
            if requestID != 0 { broker.send(ClusterAnswer(.unavailable), requestID: requestID) }
            return false
        }
        do {
            var result = ""
            for try await row in try await query(
                DirectorySchema.claim, [claim.key, claim.id, settings.instance], .bytes(claim.tokenHash),
                .int(Int(claim.limit)), .int(expiry), on: partition)
            {
                result = try row.decode(String.self)
            }
            if requestID == 0, local[id] != claim.tokenHash {
                // Released while the claim was out (a reconnect's claims run beside the broker's
                // frames): the row must not outlive the peer.
                if result == "granted" || result.hasPrefix("moved:") {
                    try await execute(DirectorySchema.release, [claim.key, claim.id, settings.instance], on: partition)
                }
                return true
            }
            switch result {
            case "granted":
                local[id] = claim.tokenHash
                announce(.registered(instance: settings.instance, key: claim.key, id: claim.id))
                if requestID != 0 { broker.send(ClusterAnswer(.granted), requestID: requestID) }
            case let moved where moved.hasPrefix("moved:"):
                let previous = String(moved.dropFirst("moved:".count))
                local[id] = claim.tokenHash
                announce(.registered(instance: settings.instance, key: claim.key, id: claim.id))
                if ClusterSettings.isValidInstance(previous) {
                    enqueue(record: ClusterRecord.moved(instance: settings.instance, key: claim.key, id: claim.id).encoded, for: previous)
                }
                if requestID != 0 { broker.send(ClusterAnswer(.granted), requestID: requestID) }
            case "taken":
                if requestID != 0 {
                    broker.send(ClusterAnswer(.taken), requestID: requestID)
                } else {
                    local[id] = nil
                    logger.notice("\(claim.id) was registered on another instance while the directory was away; closing it here")
                    broker.send(ClusterPeerChange(.movedElsewhere, instance: "", key: claim.key, id: claim.id))
                }
            case "limit":
                if requestID != 0 { broker.send(ClusterAnswer(.limit), requestID: requestID) }
            default:
                throw ClusterError("peerjs_claim answered \(result)")
            }
            return true
        } catch {
            if requestID != 0 { broker.send(ClusterAnswer(.unavailable), requestID: requestID) }
            logger.warning("claim of \(claim.id) failed: \(Self.describe(error))")
            return false
        }
    }

    private func release(_ release: ClusterRelease, partition: Int) async {
        guard local.removeValue(forKey: LocalID(key: release.key, id: release.id)) != nil else { return }
        guard writer != nil else { return }  // the reconnect drops every row of ours not claimed again
        do {
            try await execute(DirectorySchema.release, [release.key, release.id, settings.instance], on: partition)
            announce(.released(instance: settings.instance, key: release.key, id: release.id))
        } catch {
            logger.warning("release of \(release.id) failed (\(Self.describe(error))); its row expires")
        }
    }

    /// The clean stop: this instance's rows go at once (bounded by the caller's deadline).
    func stop() async {
        guard writer != nil else { return }
        try? await execute(DirectorySchema.dropInstance, [settings.instance])
        try? await writer?.close()
        try? await listener?.close()
    }

    // MARK: - Relay out (NOTIFY outside transactions, batched while one is in flight)

    private func enqueue(_ relay: ClusterRelay) {
        guard ClusterSettings.isValidInstance(relay.instance), relay.instance != settings.instance else { return }
        let record = ClusterRecord.message(instance: settings.instance, key: relay.key, id: relay.id, source: relay.source, frame: relay.frame)
        enqueue(record: record.encoded, for: relay.instance)
    }

    private func enqueue(record: [UInt8], for instance: String) {
        guard available else { return }
        guard outboxBytes + record.count <= Self.maxOutboxBytes else {
            logger.warning("\(Self.maxOutboxBytes) bytes already wait for other instances; a frame for \(instance) is dropped")
            return
        }
        outbox[instance, default: []].append(record)
        outboxBytes += record.count
        startFlush()
    }

    private func announce(_ record: ClusterRecord) {
        announcements.append(record.encoded)
        startFlush()
    }

    private func startFlush() {
        guard !flushing else { return }
        flushing = true
        Task { await self.flush() }
    }

    private func flush() async {
        defer { flushing = false }
        while available, !outbox.isEmpty || !announcements.isEmpty {
            let batch = outbox
            let directory = announcements
            outbox = [:]
            outboxBytes = 0
            announcements = []
            do {
                if !directory.isEmpty { try await send(directory, on: Self.directoryChannel, target: nil) }
                for (instance, records) in batch {
                    try await send(records, on: "peerjs.i.\(instance)", target: instance)
                }
            } catch {
                logger.warning("NOTIFY failed (\(Self.describe(error))); frames for other instances were lost")
                return
            }
        }
    }

    /// Sends `records` on `channel` in as few NOTIFYs as fit; a record too large or not text
    /// goes through a `peerjs_relay` row (only to an instance: `target`).
    private func send(_ records: [[UInt8]], on channel: String, target: String?) async throws {
        var payload: [UInt8] = []
        for record in records {
            if record.count > ClusterRecord.notifyLimit || !ClusterRecord.isNotifiable(record) {
                guard let target else { continue }
                var seq: Int64 = 0
                for try await row in try await query(DirectorySchema.putRelay, [target], .bytes(record)) {
                    seq = try row.decode(Int64.self)
                }
                let pointer = ClusterRecord.stored(seq: seq).encoded
                if payload.count + pointer.count > ClusterRecord.notifyLimit {
                    try await notify(channel, payload)
                    payload = []
                }
                payload += pointer
                continue
            }
            if payload.count + record.count > ClusterRecord.notifyLimit {
                try await notify(channel, payload)
                payload = []
            }
            payload += record
        }
        if !payload.isEmpty { try await notify(channel, payload) }
    }

    private func notify(_ channel: String, _ payload: [UInt8]) async throws {
        try await execute(DirectorySchema.notify, [channel, String(decoding: payload, as: UTF8.self)])
    }

    // MARK: - Relay in

    private func listen(on channel: String, _ connection: PostgresConnection) async {
        do {
            try await connection.listen(on: channel) { notifications in
                for try await notification in notifications {
                    await self.received(Array(notification.payload.utf8), on: channel)
                }
            }
            if !Task.isCancelled { listenerFailed = "LISTEN \(channel) ended" }
        } catch {
            if !Task.isCancelled { listenerFailed = "LISTEN \(channel): \(Self.describe(error))" }
        }
    }

    private func received(_ payload: [UInt8], on channel: String) async {
        guard let records = ClusterRecord.parse(payload) else {
            logger.warning("a malformed notification on \(channel) (\(payload.count) bytes) was ignored")
            return
        }
        for record in records { await handle(record, on: channel, stored: false) }
    }

    private func handle(_ record: ClusterRecord, on channel: String, stored: Bool) async {
        let mine = channel == instanceChannel
        guard Self.namesFit(record) else {
            logger.warning("a notification record on \(channel) with an invalid instance, key or id was ignored")
            return
        }
        switch record {
        case .registered(let instance, let key, let id) where !mine && instance != settings.instance:
            reportedGone.remove(instance)
            broker.send(ClusterPeerChange(.registered, instance: instance, key: key, id: id))
        case .released(let instance, let key, let id) where !mine && instance != settings.instance:
            broker.send(ClusterPeerChange(.released, instance: instance, key: key, id: id))
        case .message(let instance, let key, let id, let source, let frame) where mine:
            guard frame.count <= ClusterRelay.maxFrameBytes else { return }
            if !broker.send(ClusterDeliver(ClusterRelay(instance: instance, key: key, id: id, source: source, frame: frame))) {
                logger.warning("the broker did not take a frame for \(id) from \(instance); it is lost")
            }
        case .moved(let instance, let key, let id) where mine:
            guard local.removeValue(forKey: LocalID(key: key, id: id)) != nil else { return }
            broker.send(ClusterPeerChange(.movedElsewhere, instance: instance, key: key, id: id))
        case .stored(let seq) where mine && !stored:
            do {
                var body: [UInt8]?
                for try await row in try await query(DirectorySchema.takeRelay, [], .int64(seq), .text(settings.instance)) {
                    var buffer = try row.decode(ByteBuffer.self)
                    body = buffer.readBytes(length: buffer.readableBytes)
                }
                guard let body, let records = ClusterRecord.parse(body) else { return }
                for record in records { await handle(record, on: channel, stored: true) }
            } catch {
                logger.warning("relay row \(seq) could not be taken (\(Self.describe(error))); its frame is lost")
            }
        case .ping(let nonce) where mine:
            // Only our own pings count (anyone with the database can NOTIFY our channel).
            if nonce <= pingNonce, nonce > lastNonceSeen {
                lastNonceSeen = nonce
                lastPingSeen = .now
            }
        default:
            logger.debug("a notification record out of place on \(channel) was ignored")
        }
    }

    /// Sleeps on the event loop: Swift's own timers (`Task.sleep`) run on libdispatch, which
    /// makes timer descriptors lazily, after the filter is in; NIO's loop has its timer already.
    private func pause(for duration: Duration) async throws {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        try await group.next().scheduleTask(in: .nanoseconds(nanoseconds)) {}.futureResult.get()
        try Task.checkCancellation()
    }

    /// Whether a record's names fit what the broker accepts (another instance wrote them).
    static func namesFit(_ record: ClusterRecord) -> Bool {
        func fits(_ instance: String, _ key: String, _ ids: String...) -> Bool {
            ClusterSettings.isValidInstance(instance) && !key.isEmpty && key.utf8.count <= ClusterClaim.maxKeyLength
                && ids.allSatisfy { !$0.isEmpty && $0.utf8.count <= ClusterClaim.maxIDLength }
        }
        switch record {
        case .registered(let instance, let key, let id), .released(let instance, let key, let id), .moved(let instance, let key, let id):
            return fits(instance, key, id)
        case .message(let instance, let key, let id, let source, _):
            return fits(instance, key, id, source)
        case .stored, .ping:
            return true
        }
    }

    // MARK: - Queries

    enum Bind {
        case int(Int), int64(Int64), bytes([UInt8]), text(String)
    }

    /// Runs `sql` on the writer, or on the connection of claim partition `partition`.
    private func query(_ sql: String, _ texts: [String], _ more: Bind..., on partition: Int? = nil) async throws -> PostgresRowSequence {
        guard let writer else { throw ClusterError("not connected") }
        let connection = partition.flatMap { $0 < claimers.count ? claimers[$0] : nil } ?? writer
        var binds = PostgresBindings()
        for text in texts { binds.append(text) }
        for bind in more {
            switch bind {
            case .int(let value): binds.append(value)
            case .int64(let value): binds.append(value)
            case .bytes(let value): binds.append(ByteBuffer(bytes: value))
            case .text(let value): binds.append(value)
            }
        }
        return try await connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger)
    }

    private func execute(_ sql: String, _ texts: [String], on partition: Int? = nil) async throws {
        _ = try await query(sql, texts, on: partition).collect()
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return "PostgreSQL: \(message)" }
            return "\(error.code)"
        }
        return "\(error)"
    }
}

/// A failure of the cluster role, with what to do about it.
struct ClusterError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
