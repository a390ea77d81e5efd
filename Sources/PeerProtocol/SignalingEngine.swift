/// The PeerJS signalling rules of PROTOCOL.md §7 — registration, relay, offline queues,
/// expiry, liveness — as plain Swift over an injected clock and transport, so every rule is
/// tested without a socket. It is not thread-safe: one event loop owns it.
public final class SignalingEngine<Transport: PeerTransport, Store: Registry> {
    /// A registered connection: the id and realm it speaks for and when it was last heard.
    struct Session {
        var id: String
        var key: String
        /// The client's address, for the events.
        var ip: String
        var lastSeen: Int64
        var lastPing: Int64
    }

    public private(set) var settings: ProtocolSettings
    public private(set) var registry: Store
    private let transport: Transport
    private let clock: any MonotonicClock
    private let makeID: () -> String
    private var sessions: [ConnectionID: Session] = [:]
    private var queues = OfflineQueues()
    /// Registrations waiting for the policy's answer.
    private var waiting = PendingAuthorizations()
    /// Clustered: registrations waiting for the peer directory's answer to their claim.
    private var claims = PendingClaims()
    /// Registrations waiting to take an id over from a socket that may be dead (`--takeover-timeout`).
    private var takeovers = PendingTakeovers()
    /// Clustered: the ids other instances hold, as the directory announced them.
    private var remote = RemotePeers()
    /// Clustered: whether the peer directory answers (the cluster role says so).
    public private(set) var directoryAvailable = false
    /// What the engine did, for the metrics endpoint.
    public private(set) var counters = EngineCounters()
    /// The relayed frame being built: reused, so relaying allocates no array per message.
    private var scratch: [UInt8] = []

    public init(
        settings: ProtocolSettings, registry: Store, transport: Transport, clock: any MonotonicClock,
        idGenerator: @escaping () -> String = PeerIdentifier.uuid4
    ) {
        self.settings = settings
        self.registry = registry
        self.transport = transport
        self.clock = clock
        self.makeID = idGenerator
    }

    /// Applies new settings (SIGHUP); registered peers stay.
    public func update(_ settings: ProtocolSettings) {
        self.settings = settings
    }

    // MARK: - Registration (PROTOCOL.md §7.1, with the §13 decisions)

    /// A WebSocket client from `ip` asks to register. Without a policy
    /// (``ProtocolSettings/authorizes`` false) the engine decides at once. With one, the parameter
    /// checks (missing, then the length and character rules) run first, and the policy is asked
    /// before the key and id checks (PROTOCOL.md §9, "Suggested mapping"): the engine keeps the
    /// registration waiting and returns `.authorize`, whose answer goes to ``verdict(_:for:)``.
    public func admit(_ connection: ConnectionID, request: RegistrationRequest, ip: String) -> RegistrationAction {
        guard settings.authorizes else { return action(register(connection, request: request, ip: ip)) }
        guard let id = request.id, !id.isEmpty, let token = request.token, !token.isEmpty,
            let key = request.key, !key.isEmpty
        else {
            return action(reject(connection, .missingParameters))
        }
        if let violation = request.violation { return action(reject(connection, violation)) }
        waiting.insert(connection, request: request, ip: ip)
        return .authorize(
            AuthorizationQuery(connection: connection, id: id, token: token, key: key, ip: ip, version: request.version ?? ""))
    }

    /// The policy's answer for the registration of `connection`: registers it (`.open`, or a
    /// refusal by the engine's own rules) or refuses it. `.none` when no registration of
    /// `connection` waits (the client left, or it was answered before).
    public func verdict(_ answer: AuthorizationAnswer, for connection: ConnectionID) -> RegistrationAction {
        guard let entry = waiting.take(connection) else { return .none }
        counters.count(answer)
        if let refusal = answer.refusal { return action(reject(connection, refusal)) }
        return action(register(connection, request: entry.request, ip: entry.ip))
    }

    /// Registrations waiting for the policy's answer.
    public var waitingForAuthorization: Int { waiting.count }

    private func action(_ outcome: RegistrationOutcome) -> RegistrationAction {
        switch outcome {
        case .registered, .replacedPrevious: .open
        case .rejected(let reason): .refuse(reason)
        case .claiming(let claim): .claim(claim)
        case .takingOver: .takeover
        }
    }

    /// Registers `connection` for the id, token and key it presented, without asking any policy.
    /// On refusal the client has been sent its ERROR / ID-TAKEN frame and the connection is closed.
    @discardableResult
    public func register(_ connection: ConnectionID, request: RegistrationRequest, ip: String = "") -> RegistrationOutcome {
        register(connection, request: request, ip: ip, claimed: false)
    }

    /// `claimed`: the peer directory granted the id to this instance (clustered only).
    /// `mayTakeOver`: an id held with another token starts a takeover (false once one was decided).
    private func register(
        _ connection: ConnectionID, request: RegistrationRequest, ip: String, claimed: Bool, mayTakeOver: Bool = true
    ) -> RegistrationOutcome {
        guard let id = request.id, !id.isEmpty, let token = request.token, !token.isEmpty,
            let key = request.key, !key.isEmpty
        else {
            return reject(connection, .missingParameters)
        }
        if let violation = request.violation { return reject(connection, violation) }
        guard settings.keys.contains(key) else { return reject(connection, .invalidKey) }

        var outcome = RegistrationOutcome.registered
        if let existing = registry.entry(for: id, key: key) {
            guard existing.token == token else {
                guard mayTakeOver else { return reject(connection, .idTaken) }
                return takeOver(existing.connection, for: connection, request: request, ip: ip)
            }
            // Same id and token: the new socket takes over and the old one is closed (§13).
            if existing.connection != connection {
                let old = sessions.removeValue(forKey: existing.connection)
                transport.close(existing.connection)
                transport.peerEvent(
                    .disconnected(id: id, key: key, connection: existing.connection, ip: old?.ip ?? "", reason: .replaced))
            }
            outcome = .replacedPrevious
        } else if registry.count >= settings.concurrentLimit {
            counters.concurrentLimitHits += 1
            return reject(connection, .concurrentLimit)
        } else if settings.clustered, !claimed {
            // A new id: the directory decides whether another instance holds it. One whose claim
            // is out already is as good as registered: another token is refused here and now.
            if let pending = claims.token(of: id, key: key), pending != token { return reject(connection, .idTaken) }
            guard directoryAvailable else { return reject(connection, .directoryUnavailable) }
            claims.insert(connection, PendingClaims.Entry(request: request, ip: ip, id: id, key: key, token: token))
            return .claiming(DirectoryClaim(connection: connection, id: id, key: key, token: token))
        }

        let now = clock.nowMilliseconds
        remote.remove(id, key: key, instance: nil)
        registry.set(PeerEntry(token: token, connection: connection), for: id, key: key)
        sessions[connection] = Session(id: id, key: key, ip: ip, lastSeen: now, lastPing: now)
        _ = transport.send(Self.openFrame, to: connection)
        transport.peerEvent(.connected(id: id, key: key, connection: connection, ip: ip))
        let queued = queues.take(OfflineQueues.Destination(key: key, id: id))
        for message in queued {
            guard transport.send(message.frame, to: connection) else {
                // The peer cannot take its own queue (more than its output limit): it is dropped,
                // and every sender of the queue gets EXPIRE, as if it had never come — nothing
                // accepted is lost without a word, and what did go out may not arrive either.
                drop(connection, reason: .sendFailed)
                var seen = Set<String>()
                expire(senders: queued.map(\.source).filter { seen.insert($0).inserted }, waitingFor: id, key: key)
                break
            }
        }
        return outcome
    }

    /// Another token asks for an id `holder` has: `holder` is pinged and the claimant waits for
    /// the outcome (``tick()`` or the holder's next sign of life decides), unless takeover is off
    /// or another claimant waits for this holder already — then `ID-TAKEN` at once.
    private func takeOver(_ holder: ConnectionID, for claimant: ConnectionID, request: RegistrationRequest, ip: String) -> RegistrationOutcome {
        guard settings.takeoverTimeoutMs > 0, holder != claimant, sessions[holder] != nil, !takeovers.isClaimed(holder) else {
            return reject(claimant, .idTaken)
        }
        let deadline = clock.nowMilliseconds + settings.takeoverTimeoutMs
        takeovers.insert(holder: holder, PendingTakeovers.Entry(claimant: claimant, request: request, ip: ip, deadline: deadline))
        transport.ping(holder)
        return .takingOver
    }

    /// Why a claimant whose takeover is due could not register even once the holder is gone.
    private func takeoverRefusal(_ request: RegistrationRequest) -> RejectReason? {
        guard let key = request.key, settings.keys.contains(key) else { return .invalidKey }
        if settings.clustered, !directoryAvailable { return .directoryUnavailable }
        return nil
    }

    /// `connection` showed a sign of life: a claimant waiting to take its id over gets `ID-TAKEN`.
    private func answered(_ connection: ConnectionID) {
        guard !takeovers.isEmpty, let claim = takeovers.remove(holder: connection) else { return }
        counters.takeoverRefused += 1
        _ = reject(claim.claimant, .idTaken)
    }

    /// Registrations waiting for a takeover's outcome.
    public var waitingForTakeover: Int { takeovers.count }

    private func reject(_ connection: ConnectionID, _ reason: RejectReason) -> RegistrationOutcome {
        _ = transport.send(reason.frame, to: connection)
        transport.close(connection)
        return .rejected(reason)
    }

    /// Refuses a connection for a reason decided outside the engine (`ip_limit`): ERROR, close.
    public func deny(_ connection: ConnectionID, reason: String) {
        _ = waiting.take(connection)
        _ = reject(connection, .denied(reason))
    }

    static var openFrame: [UInt8] { EnvelopeWriter.open() }

    // MARK: - Messages (PROTOCOL.md §7.4)

    /// Handles one text (or binary) message from `connection`. Anything that is not a JSON
    /// object with a known type is ignored; every frame counts as a sign of life.
    public func receive(_ bytes: UnsafeRawBufferPointer, from connection: ConnectionID) {
        guard let index = sessions.index(forKey: connection) else { return }
        sessions.values[index].lastSeen = clock.nowMilliseconds
        // Copied before `answered`: refusing a claimant closes its channel, which may re-enter the
        // engine and change `sessions`, so `index` must not be used after it.
        let session = sessions.values[index]
        answered(connection)
        guard let envelope = EnvelopeParser.parse(bytes), let type = envelope.type else { return }
        switch type {
        case .offer, .answer, .candidate, .leave, .expire:
            let payload = envelope.payload.map { UnsafeRawBufferPointer(rebasing: bytes[$0]) }
            relay(type, from: session.id, connection: connection, key: session.key, to: envelope.dst, payload: payload)
        case .heartbeat, .open, .error, .idTaken, .invalidKey, .unknown:
            return
        }
    }

    /// Convenience for tests and callers holding an array.
    public func receive(_ bytes: [UInt8], from connection: ConnectionID) {
        bytes.withUnsafeBytes { receive($0, from: connection) }
    }

    /// Any other sign of life (a pong) from `connection`.
    public func touch(_ connection: ConnectionID) {
        guard let index = sessions.index(forKey: connection) else { return }
        sessions.values[index].lastSeen = clock.nowMilliseconds
        answered(connection)
    }

    private func relay(
        _ type: MessageType, from source: String, connection: ConnectionID, key: String, to destination: String?,
        payload: UnsafeRawBufferPointer?
    ) {
        guard let destination, !destination.isEmpty else {
            if type == .leave { leave(connection) }
            return
        }
        scratch.removeAll(keepingCapacity: true)
        EnvelopeWriter.write(type: type.wireName, src: source, dst: destination, payload: payload, into: &scratch)
        if let entry = registry.entry(for: destination, key: key) {
            counters.relayed(type)
            let sent = scratch.withUnsafeBytes { transport.send($0, to: entry.connection) }
            if !sent {
                drop(entry.connection, reason: .sendFailed)
                // Tell the sender its peer is gone (§7.4); no further fallback if that fails too.
                let leave = EnvelopeWriter.encode(type: "LEAVE", src: destination, dst: source, payload: nil)
                if !transport.send(leave, to: connection) { drop(connection, reason: .sendFailed) }
            }
            return
        }
        if settings.clustered, let instance = remote.instance(of: destination, key: key) {
            counters.relayed(type)
            let sent = scratch.withUnsafeBytes { transport.forward($0, key: key, to: destination, from: source, at: instance) }
            if !sent, type != .leave, type != .expire {
                // The directory is down or the link full: at most once, and the sender hears it.
                let expire = EnvelopeWriter.encode(type: "EXPIRE", src: destination, dst: source, payload: nil)
                if !transport.send(expire, to: connection) { drop(connection, reason: .sendFailed) }
            }
            return
        }
        // Nothing is queued for an id nobody can register (too long, control characters):
        // dropped like a missing dst (E6), so no queue is keyed by such a string.
        guard type != .leave, type != .expire, RegistrationRequest.isAcceptableID(destination) else { return }
        let queued = queues.append(
            scratch, from: source, to: OfflineQueues.Destination(key: key, id: destination),
            now: clock.nowMilliseconds, limits: settings)
        if queued == .full {
            counters.expiredMessages += 1
            let expire = EnvelopeWriter.encode(type: "EXPIRE", src: destination, dst: source, payload: nil)
            _ = transport.send(expire, to: connection)
        } else {
            counters.relayed(type)
        }
    }

    /// `LEAVE` without `dst`: the sender gives up its id, and the server closes its socket (E2).
    private func leave(_ connection: ConnectionID) {
        drop(connection, reason: .leave)
    }

    // MARK: - Disconnects and timers

    /// The transport saw `connection` close. Unregisters its id only if the registry still
    /// points at this very connection (E2).
    public func connectionClosed(_ connection: ConnectionID) {
        _ = waiting.take(connection)
        takeovers.remove(claimant: connection)
        if let claim = claims.take(connection) {
            // Its claim is on its way: the release follows it on the same channel, in order.
            releaseIfUnused(id: claim.id, key: claim.key)
        }
        guard let session = sessions.removeValue(forKey: connection) else { return }
        unregister(session, connection: connection)
        transport.peerEvent(
            .disconnected(id: session.id, key: session.key, connection: connection, ip: session.ip, reason: .closed))
    }

    /// Tells each sender still registered that its messages for `destination` will not be
    /// delivered (`EXPIRE`, src `destination`); a sender that cannot take even that is dropped.
    private func expire(senders: [String], waitingFor destination: String, key: String) {
        for sender in senders {
            let expire = EnvelopeWriter.encode(type: "EXPIRE", src: destination, dst: sender, payload: nil)
            guard let entry = registry.entry(for: sender, key: key) else {
                if settings.clustered, let instance = remote.instance(of: sender, key: key) {
                    counters.expiredMessages += 1
                    _ = expire.withUnsafeBytes { transport.forward($0, key: key, to: sender, from: destination, at: instance) }
                }
                continue
            }
            counters.expiredMessages += 1
            if !transport.send(expire, to: entry.connection) { drop(entry.connection, reason: .sendFailed) }
        }
    }

    /// Removes the registry entry of `session` if it still points at `connection`; clustered,
    /// its directory row goes too (unless the id moved to another instance, which owns the row).
    private func unregister(_ session: Session, connection: ConnectionID, releasing: Bool = true) {
        guard registry.entry(for: session.id, key: session.key)?.connection == connection else { return }
        registry.remove(id: session.id, key: session.key)
        if releasing { releaseIfUnused(id: session.id, key: session.key) }
    }

    /// Clustered: gives the directory row of `id` up, unless a connection here still holds it
    /// or claims it (the row is then theirs).
    private func releaseIfUnused(id: String, key: String) {
        guard settings.clustered, registry.entry(for: id, key: key) == nil, claims.token(of: id, key: key) == nil else { return }
        transport.released(id: id, key: key)
    }

    /// Unregisters and closes a registered connection.
    private func drop(_ connection: ConnectionID, reason: DisconnectReason) {
        guard let session = sessions.removeValue(forKey: connection) else { return }
        unregister(session, connection: connection, releasing: reason != .movedElsewhere)
        transport.close(connection)
        transport.peerEvent(
            .disconnected(id: session.id, key: session.key, connection: connection, ip: session.ip, reason: reason))
    }

    /// Runs the periodic rules: decides the takeovers that are due, expires offline queues
    /// (senders get `EXPIRE`), pings peers that have been silent for a third of `alive_timeout`,
    /// and drops those silent for all of it. Returns the claims a takeover started (clustered:
    /// the freed id is claimed in the peer directory again, for its new token).
    @discardableResult
    public func tick() -> [DirectoryClaim] {
        let now = clock.nowMilliseconds
        var claimsOut: [DirectoryClaim] = []
        for (holder, claim) in takeovers.due(now: now, isGone: { sessions[$0] == nil }) {
            let holderIsThere = sessions[holder] != nil
            // What would refuse the claimant anyway refuses it now, before the holder is closed:
            // its key gone by a reload, or (clustered) no directory to claim the id in.
            if let refusal = takeoverRefusal(claim.request) {
                _ = reject(claim.claimant, refusal)
                continue
            }
            // Output still waits in the server for the holder: the ping may not have reached it,
            // and a slow link is not a dead socket. It keeps its id (alive_timeout decides).
            if holderIsThere, transport.hasPendingOutput(holder) {
                counters.takeoverRefused += 1
                _ = reject(claim.claimant, .idTaken)
                continue
            }
            // Silent until the deadline (or closed meanwhile): the holder goes, like a LEAVE,
            // and the claimant registers as if the id had been free — unless someone else took
            // it in between, which is ID-TAKEN.
            if holderIsThere { counters.takenOver += 1 }
            drop(holder, reason: .takenOver)
            let outcome = register(claim.claimant, request: claim.request, ip: claim.ip, claimed: false, mayTakeOver: false)
            if case .claiming(let directoryClaim) = outcome { claimsOut.append(directoryClaim) }
        }
        for (destination, senders) in queues.expire(now: now, expireAfter: settings.expireTimeoutMs) {
            expire(senders: senders, waitingFor: destination.id, key: destination.key)
        }
        let pingAfter = max(1, settings.aliveTimeoutMs / 3)
        var silent: [ConnectionID] = []
        for index in sessions.indices {
            let (connection, session) = sessions[index]
            let quiet = now - session.lastSeen
            if quiet >= settings.aliveTimeoutMs {
                silent.append(connection)
            } else if quiet >= pingAfter, now - session.lastPing >= pingAfter {
                sessions.values[index].lastPing = now
                transport.ping(connection)
            }
        }
        for connection in silent { drop(connection, reason: .aliveTimeout) }
        return claimsOut
    }

    /// How often the owner should call `tick()` so that expiry and liveness keep their timing.
    public var tickIntervalMs: Int64 {
        let takeover = settings.takeoverTimeoutMs > 0 ? settings.takeoverTimeoutMs / 4 : Int64.max
        return max(5, min(300, settings.aliveTimeoutMs / 6, settings.cleanupIntervalMs, takeover))
    }

    // MARK: - HTTP side

    /// A fresh id for `GET /{key}/id`: regenerated while it equals a registered id.
    public func newID(key: String) -> String {
        var candidate = makeID()
        var attempts = 0
        while registry.entry(for: candidate, key: key) != nil || remote.instance(of: candidate, key: key) != nil, attempts < 16 {
            candidate = makeID()
            attempts += 1
        }
        return candidate
    }

    /// The ids of a realm, for `GET /{key}/peers`.
    public func peers(key: String) -> [String] {
        guard settings.clustered else { return registry.ids(key: key) }
        let local = registry.ids(key: key)
        let held = Set(local)
        return local + remote.ids(key: key).filter { !held.contains($0) }
    }

    // MARK: - The peer directory (clustered)

    /// The directory's answer to the claim of `connection`'s registration: registers it (OPEN,
    /// or a refusal by the engine's own rules, checked again) or refuses it. `.none` when no
    /// claim of `connection` waits (the client left: its release already followed the claim).
    public func claimed(_ answer: ClaimAnswer, for connection: ConnectionID) -> RegistrationAction {
        guard let entry = claims.take(connection) else { return .none }
        switch answer {
        case .granted:
            let outcome = register(connection, request: entry.request, ip: entry.ip, claimed: true)
            // Granted, then refused here after all (a reload took its key away): the row goes.
            if case .rejected = outcome { releaseIfUnused(id: entry.id, key: entry.key) }
            return action(outcome)
        case .taken: return action(reject(connection, .idTaken))
        case .limit: return action(reject(connection, .concurrentLimit))
        case .unavailable:
            // Unanswered in time, perhaps granted later all the same: the release follows the
            // claim on the channel, so its row cannot outlive the refusal.
            let refused = action(reject(connection, .directoryUnavailable))
            releaseIfUnused(id: entry.id, key: entry.key)
            return refused
        }
    }

    /// Registrations waiting for the directory's answer.
    public var waitingForDirectory: Int { claims.count }

    /// Whether the directory answers. While it does not, new ids are refused and messages for
    /// ids on other instances get EXPIRE; local peers go on.
    public func directory(available: Bool) {
        directoryAvailable = available
    }

    /// Another instance registered `id`: messages for it go there from now on, and those queued
    /// here for it leave at once.
    public func remoteRegistered(id: String, key: String, instance: String) {
        // Another instance's word: only for a realm served here, and never more ids than the
        // cluster may hold (concurrent_limit is cluster-wide).
        guard settings.keys.contains(key), RegistrationRequest.isAcceptableID(id),
            remote.instance(of: id, key: key) != nil || remote.count < settings.concurrentLimit
        else { return }
        remote.set(id, key: key, instance: instance)
        for message in queues.take(OfflineQueues.Destination(key: key, id: id)) {
            _ = message.frame.withUnsafeBytes { transport.forward($0, key: key, to: id, from: message.source, at: instance) }
        }
    }

    /// `instance` gave `id` up.
    public func remoteReleased(id: String, key: String, instance: String) {
        remote.remove(id, key: key, instance: instance)
    }

    /// `instance` stopped refreshing its rows: its ids are free, and messages for them queue here.
    public func remoteInstanceGone(_ instance: String) {
        remote.removeAll(held: instance)
    }

    /// Forgets every remote id (the directory is about to be announced again, or is gone).
    public func forgetRemotePeers() {
        remote.removeAll()
    }

    /// Ids held by other instances, as last announced.
    public var remoteCount: Int { remote.count }

    /// The same id and token registered on another instance, which now owns the directory row:
    /// the local peer is dropped without releasing that row.
    public func movedElsewhere(id: String, key: String) {
        guard let entry = registry.entry(for: id, key: key) else { return }
        drop(entry.connection, reason: .movedElsewhere)
    }

    /// A frame another instance relayed to `id` (from `source` there): delivered like a local
    /// relay (queued while `id` is not registered here, then EXPIRE goes back to `source`).
    public func deliver(_ frame: UnsafeRawBufferPointer, key: String, to id: String, from source: String) {
        if let entry = registry.entry(for: id, key: key) {
            if !transport.send(frame, to: entry.connection) {
                drop(entry.connection, reason: .sendFailed)
                if let instance = remote.instance(of: source, key: key) {
                    let leave = EnvelopeWriter.encode(type: "LEAVE", src: id, dst: source, payload: nil)
                    _ = leave.withUnsafeBytes { transport.forward($0, key: key, to: source, from: id, at: instance) }
                }
            }
            return
        }
        guard RegistrationRequest.isAcceptableID(id), RegistrationRequest.isAcceptableID(source), settings.keys.contains(key) else { return }
        // Like a local LEAVE or EXPIRE for an absent id: dropped, never queued.
        if let envelope = EnvelopeParser.parse(frame), envelope.type == .leave || envelope.type == .expire { return }
        let queued = queues.append(
            Array(frame), from: source, to: OfflineQueues.Destination(key: key, id: id),
            now: clock.nowMilliseconds, limits: settings)
        if queued == .full { expire(senders: [source], waitingFor: id, key: key) }
    }

    /// Counters for the supervisor's status line and the benchmarks.
    public var statistics: (registered: Int, queuedMessages: Int, queuedBytes: Int) {
        (registry.count, queues.messageCount, queues.byteCount)
    }

    /// The ids registered here in realm `key`.
    public func registeredCount(key: String) -> Int { registry.count(key: key) }
}
