import Glibc
import Logging
import NIOCore
import PeerProtocol

/// The broker's descriptor budget and per-address limits. It exists so that no client, and no
/// number of clients, can make the broker hold more descriptors than its RLIMIT_NOFILE: a
/// hand-off into a full descriptor table loses the descriptor (`MSG_CTRUNC`), and every state a
/// client holds must have an end.
///
/// - The broker holds at most `budget` connections (registered peers plus connections still in
///   their handshake). The supervisor hands over only connections it holds credit for; the
///   broker grants credit (`credit` frames) for every slot that frees up, and sheds nothing
///   itself: a supervisor without credit accepts and closes.
/// - When free slots run low, or more than `handshakeLimit` connections are in their handshake,
///   the oldest unfinished handshake is closed: stalled connections make room for new ones.
/// - Per client address: at most `ipHandshakeLimit` unfinished handshakes (the next one is closed
///   at once) and at most `ipLimit` WebSocket connections (the next gets PeerJS's
///   `{ip} has reached its concurrent user limit`). Connections from a trusted proxy are counted
///   by the client address it forwards, once the request head names it.
///
/// Lives on the broker's event loop, like ``BrokerState``.
final class Admission {
    /// One adopted connection.
    struct Slot {
        var channel: (any Channel)?
        /// The address its limits are counted under; nil while a trusted proxy's connection has
        /// not yet named its client.
        var address: String?
        var inHandshake = true
        var isPeer = false
        var evicted = false
    }

    struct Counts {
        var handshakes = 0
        var peers = 0
    }

    private var slots: [UInt64: Slot] = [:]
    /// Slot ids in arrival order; entries whose slot finished its handshake or closed are
    /// skipped (and dropped) when the oldest is looked for.
    private var handshakeOrder: [UInt64] = []
    private var orderStart = 0
    private var perAddress: [String: Counts] = [:]
    private var nextID: UInt64 = 0

    private(set) var budget: Int
    private(set) var handshakes = 0
    /// Credit granted to the supervisor and not yet used by a hand-off.
    private(set) var outstanding = 0
    private(set) var evictions = 0
    /// Evicted slots whose close has not completed yet.
    private var evicting = 0
    private var configuration: BrokerConfiguration
    private let logger: Logger
    private let loop: any EventLoop
    /// Sends a `credit` frame; false when the channel has no room now (retried shortly).
    var sendCredit: ((Int) -> Bool)?
    private var creditScheduled = false
    private var announced = false
    /// Whether the last `credit` said "full" (0) and no grant has followed.
    private var reportedFull = false
    private var refusalsLogged: [String: Int64] = [:]
    private var refusalWindowStart: Int64 = 0
    private var refusalsInWindow = 0
    private var refusalsUnlogged = 0

    init(configuration: BrokerConfiguration, budget: Int, loop: any EventLoop, logger: Logger) {
        self.configuration = configuration
        self.budget = budget
        self.loop = loop
        self.logger = logger
    }

    var held: Int { slots.count }

    /// A new configuration and (from a re-set descriptor limit) budget. Credit already granted
    /// cannot be taken back: a smaller budget is reached as connections close.
    func update(_ configuration: BrokerConfiguration, budget: Int) {
        self.configuration = configuration
        if budget != self.budget || !announced {
            announced = true
            logger.info("connection budget: \(budget) connections (--concurrent_limit + --handshake_limit, within RLIMIT_NOFILE)")
        }
        self.budget = budget
        evictIfNeeded()
        scheduleCredit()
    }

    /// The lowest number of free slots kept for new arrivals by closing stalled handshakes.
    private var lowWater: Int { max(1, min(64, budget / 16)) }

    // MARK: - Arrivals

    /// A hand-off arrived (or its descriptor was lost on the way): one credit is used.
    func arrived() {
        if outstanding > 0 { outstanding -= 1 }
        scheduleCredit()
    }

    /// Admits a connection from `socketAddress` (a host, without port): returns its slot id, or
    /// nil when its address has too many unfinished handshakes (the caller closes it at once).
    func admit(socketAddress host: String) -> UInt64? {
        let trustedProxy = isTrustedProxy(host)
        let socketAddress = Self.limitKey(host)
        if !trustedProxy, configuration.ipHandshakeLimit > 0,
            perAddress[socketAddress, default: Counts()].handshakes >= configuration.ipHandshakeLimit
        {
            logRefusal(socketAddress, "it has \(configuration.ipHandshakeLimit) connections in their handshake (--ip_handshake_limit)")
            scheduleCredit()
            return nil
        }
        nextID += 1
        let id = nextID
        let address = trustedProxy ? nil : socketAddress
        slots[id] = Slot(address: address)
        if let address { perAddress[address, default: Counts()].handshakes += 1 }
        handshakes += 1
        handshakeOrder.append(id)
        compactOrderIfNeeded()
        evictIfNeeded()
        return id
    }

    /// The channel of slot `id` is set up; it is closed here when it is evicted.
    func attach(_ id: UInt64, channel: any Channel) {
        guard slots[id] != nil else { return }
        slots[id]?.channel = channel
        if slots[id]?.evicted == true { channel.close(promise: nil) }
    }

    /// The WebSocket handshake of slot `id` is done; `client` is the address of the client
    /// (the forwarded one behind a trusted proxy). Returns false when that address already has
    /// `ipLimit` WebSocket connections: the caller refuses the registration.
    func finishedHandshake(_ id: UInt64, client: String) -> Bool {
        guard var slot = slots[id], slot.inHandshake, !slot.evicted else { return true }
        let client = Self.limitKey(client)
        slot.inHandshake = false
        handshakes -= 1
        if let address = slot.address {
            perAddress[address, default: Counts()].handshakes -= 1
            if address != client { removeIfEmpty(address) }
        }
        slot.address = client
        let counts = perAddress[client, default: Counts()]
        if configuration.ipLimit > 0, counts.peers >= configuration.ipLimit {
            slots[id] = slot
            removeIfEmpty(client)
            logRefusal(client, "it has \(configuration.ipLimit) WebSocket connections (--ip_limit)")
            return false
        }
        slot.isPeer = true
        perAddress[client, default: Counts()].peers += 1
        slots[id] = slot
        return true
    }

    /// Slot `id`'s connection has closed: its slot is free and its credit goes back.
    func closed(_ id: UInt64) {
        guard let slot = slots.removeValue(forKey: id) else { return }
        if slot.evicted { evicting -= 1 }
        if slot.inHandshake { handshakes -= 1 }
        if let address = slot.address {
            if slot.inHandshake { perAddress[address]?.handshakes -= 1 }
            if slot.isPeer { perAddress[address]?.peers -= 1 }
            removeIfEmpty(address)
        }
        compactOrderIfNeeded()
        scheduleCredit()
    }

    /// Every connection still in its handshake (for the drain).
    func closeHandshakes() {
        for (_, slot) in slots where slot.inHandshake { slot.channel?.close(promise: nil) }
    }

    // MARK: - Eviction

    /// Closes the oldest unfinished handshakes while free slots are below the low-water mark or
    /// more than `handshakeLimit` connections are in their handshake. An evicted slot is
    /// accounted for when its close completes (``closed(_:)``); until then `evicting` counts it.
    private func evictIfNeeded() {
        var passes = 4096  // bounded: each pass evicts one connection or stops
        while passes > 0,
            budget - (held - evicting) < lowWater || handshakes - evicting > configuration.handshakeLimit
        {
            passes -= 1
            guard let id = oldestHandshake() else { return }
            evict(id)
        }
    }

    private func evict(_ id: UInt64) {
        guard let slot = slots[id], slot.inHandshake, !slot.evicted else { return }
        slots[id]?.evicted = true
        evicting += 1
        evictions += 1
        if evictions == 1 || evictions % 1000 == 0 {
            logger.notice(
                "closing the oldest unfinished handshakes to make room (\(evictions) so far; budget \(budget) connections, --handshake_limit \(configuration.handshakeLimit))")
        }
        slot.channel?.close(promise: nil)  // not set up yet: attach() closes it
    }

    private func oldestHandshake() -> UInt64? {
        while orderStart < handshakeOrder.count {
            let id = handshakeOrder[orderStart]
            orderStart += 1
            if let slot = slots[id], slot.inHandshake, !slot.evicted { return id }
        }
        return nil
    }

    /// Drops the ids of slots that left their handshake (or closed) once they outnumber the live
    /// ones, so the order costs O(live handshakes) memory and O(1) amortised time per arrival.
    private func compactOrderIfNeeded() {
        let entries = handshakeOrder.count - orderStart
        guard entries > 2 * max(0, handshakes) + 1024 else { return }
        handshakeOrder = handshakeOrder[orderStart...].filter { slots[$0]?.inHandshake == true }
        orderStart = 0
    }

    // MARK: - Credit

    /// Grants the supervisor what the budget allows, once per loop turn.
    private func scheduleCredit() {
        guard !creditScheduled, sendCredit != nil else { return }
        creditScheduled = true
        let bound = NIOLoopBound(self, eventLoop: loop)
        loop.execute { bound.value.grantCredit() }
    }

    /// Sends one `credit` for the free slots no credit covers yet; batches small grants while
    /// the supervisor still holds plenty.
    ///
    /// When the supervisor holds no credit and no slot can be freed (every connection is a
    /// peer past its handshake, none is being closed), the broker is full: it says so once with
    /// a `credit` of 0, and the supervisor then sheds new connections instead of letting them
    /// wait in the backlog. Merely slow is not full: the supervisor waits for credit.
    func grantCredit() {
        creditScheduled = false
        guard let sendCredit else { return }
        let grant = budget - held - outstanding
        if grant <= 0 {
            let full = outstanding == 0 && evicting == 0 && handshakes == 0
            guard full, !reportedFull else { return }
            if sendCredit(0) { reportedFull = true } else { retryCredit() }
            return
        }
        guard grant >= min(32, max(1, budget / 8)) || outstanding < lowWater || reportedFull else { return }
        if sendCredit(grant) {
            outstanding += grant
            reportedFull = false
        } else {
            retryCredit()
        }
    }

    private func retryCredit() {
        creditScheduled = true
        let bound = NIOLoopBound(self, eventLoop: loop)
        loop.scheduleTask(in: .milliseconds(10)) { bound.value.grantCredit() }
    }

    // MARK: - Addresses

    /// With `--proxied`: a connection from this address is a proxy's (any address when no
    /// list is given), so its limits count against the client it forwards.
    func isTrustedProxy(_ host: String) -> Bool {
        configuration.proxied && (configuration.trustedProxies.isEmpty || configuration.trustedProxies.contains(host))
    }

    /// The key an address's limits are counted under: an IPv4 address itself, an IPv6 address's
    /// /64 (one client, one subscriber line, usually holds a whole /64).
    static func limitKey(_ host: String) -> String {
        guard host.contains(":"), var bytes = ForwardedFor.address(host), bytes.count == 16 else { return host }
        for index in 8..<16 { bytes[index] = 0 }
        return ForwardedFor.text(bytes) + "/64"
    }

    private func removeIfEmpty(_ address: String) {
        if let counts = perAddress[address], counts.handshakes <= 0, counts.peers <= 0 {
            perAddress.removeValue(forKey: address)
        }
    }

    /// One notice per address per 10 s, and at most 20 in all per 10 s (then one line counting
    /// the rest), so a flood from many addresses cannot flood the log either.
    private func logRefusal(_ address: String, _ why: String) {
        let now = Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000)
        if now - refusalWindowStart >= 10_000 {
            if refusalsUnlogged > 0 {
                logger.notice("refused \(refusalsUnlogged) more connections over per-address limits in the last 10 s")
            }
            refusalWindowStart = now
            refusalsInWindow = 0
            refusalsUnlogged = 0
        }
        if let last = refusalsLogged[address], now - last < 10_000 { return }
        guard refusalsInWindow < 20 else {
            refusalsUnlogged += 1
            return
        }
        refusalsInWindow += 1
        if refusalsLogged.count > 4096 { refusalsLogged.removeAll() }
        refusalsLogged[address] = now
        logger.notice("refusing connections from \(address): \(why)")
    }
}

/// The broker's own descriptor limit: read and set (soft limit, up to the hard limit) so the
/// budget follows `concurrent_limit` when a reload changes it.
enum DescriptorLimit {
    /// The soft RLIMIT_NOFILE in force.
    static func current() -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(min(limit.rlim_cur, rlim_t(Int32.max)))
    }

    /// Sets the soft limit to `wanted` (capped at the hard limit); returns the limit in force.
    static func set(_ wanted: Int) -> Int {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return current() }
        limit.rlim_cur = min(rlim_t(max(64, wanted)), limit.rlim_max)
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        return current()
    }

    /// The connections a limit of `openFiles` leaves room for, after the broker's own reserve.
    static func budget(openFiles: Int, reserve: Int, configuration: BrokerConfiguration) -> Int {
        let wanted = configuration.protocolSettings.concurrentLimit + configuration.handshakeLimit
        return max(1, min(wanted, openFiles - reserve))
    }
}
