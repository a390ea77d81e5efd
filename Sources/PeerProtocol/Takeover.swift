/// The registrations waiting to take a registered id over from a socket that may be dead
/// (`--takeover-timeout`, peerjs-server#224): the holder was pinged; if it shows any sign of life
/// before the deadline the claimant gets `ID-TAKEN`, otherwise the holder is closed and the
/// claimant registers. At most one claimant per holder, so there are never more entries than
/// registered peers.
struct PendingTakeovers {
    struct Entry {
        var claimant: ConnectionID
        var request: RegistrationRequest
        var ip: String
        var deadline: Int64
    }

    /// By holder (the registered connection that was pinged).
    private var byHolder: [ConnectionID: Entry] = [:]
    /// Claimant to holder, so a claimant that leaves is forgotten.
    private var holders: [ConnectionID: ConnectionID] = [:]

    var count: Int { byHolder.count }
    var isEmpty: Bool { byHolder.isEmpty }

    func isClaimed(_ holder: ConnectionID) -> Bool { byHolder[holder] != nil }

    mutating func insert(holder: ConnectionID, _ entry: Entry) {
        byHolder[holder] = entry
        holders[entry.claimant] = holder
    }

    /// The holder answered (or is gone): its claimant, if any, leaves the list.
    mutating func remove(holder: ConnectionID) -> Entry? {
        guard let entry = byHolder.removeValue(forKey: holder) else { return nil }
        holders[entry.claimant] = nil
        return entry
    }

    /// The claimant left before the outcome.
    mutating func remove(claimant: ConnectionID) {
        guard let holder = holders.removeValue(forKey: claimant) else { return }
        byHolder[holder] = nil
    }

    /// Removes and returns, oldest deadline first, the takeovers decided now: the deadline has
    /// passed, or `isGone` says the holder is no longer registered (it closed by itself).
    mutating func due(now: Int64, isGone: (ConnectionID) -> Bool) -> [(holder: ConnectionID, entry: Entry)] {
        guard !byHolder.isEmpty else { return [] }
        let ready = byHolder.filter { $0.value.deadline <= now || isGone($0.key) }
            .map { (holder: $0.key, entry: $0.value) }
            .sorted { ($0.entry.deadline, $0.entry.claimant.rawValue) < ($1.entry.deadline, $1.entry.claimant.rawValue) }
        for item in ready { _ = remove(holder: item.holder) }
        return ready
    }
}
