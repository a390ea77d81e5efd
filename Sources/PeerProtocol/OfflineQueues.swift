/// Messages addressed to an id that is not registered, kept for `expire_timeout` so that a peer
/// that connects a moment later still gets its OFFER (PROTOCOL.md §7.5). The deadline runs from
/// the first message: later messages do not postpone it.
struct OfflineQueues {
    struct Destination: Hashable {
        var key: String
        var id: String
    }

    struct Message {
        var source: String
        var frame: [UInt8]
    }

    struct Queue {
        var createdAt: Int64
        var messages: [Message] = []
        /// What this queue costs, as counted against the limits (see ``cost(of:)``).
        var bytes = 0
    }

    /// What a queued message is charged: its bytes, its sender's id and the bookkeeping around
    /// them, so that many tiny messages cannot hold far more memory than the limits say.
    static func cost(frame: [UInt8], source: String) -> Int { frame.count + source.utf8.count + 64 }

    /// What a new destination is charged once: its key and id and the queue's own bookkeeping.
    static func cost(of destination: Destination) -> Int { destination.key.utf8.count + destination.id.utf8.count + 128 }

    private(set) var queues: [Destination: Queue] = [:]
    private(set) var messageCount = 0
    private(set) var byteCount = 0

    enum AppendResult { case queued, full }

    mutating func append(
        _ frame: [UInt8], from source: String, to destination: Destination, now: Int64,
        limits settings: ProtocolSettings
    ) -> AppendResult {
        let existing = queues[destination]
        let cost = Self.cost(frame: frame, source: source) + (existing == nil ? Self.cost(of: destination) : 0)
        guard (existing?.messages.count ?? 0) < settings.maxQueuedPerDestination,
            (existing?.bytes ?? 0) + cost <= settings.maxQueuedBytesPerDestination,
            byteCount + cost <= settings.maxQueuedBytes
        else {
            return .full
        }
        // An exact-size copy: a slice of a larger scratch buffer would keep all of it alive.
        let exact = frame.withUnsafeBufferPointer { Array($0) }
        queues[destination, default: Queue(createdAt: now)].messages.append(Message(source: source, frame: exact))
        queues[destination]?.bytes += cost
        messageCount += 1
        byteCount += cost
        return .queued
    }

    /// Removes and returns the messages for `destination`, oldest first.
    mutating func take(_ destination: Destination) -> [Message] {
        guard let queue = queues.removeValue(forKey: destination) else { return [] }
        forget(queue)
        return queue.messages
    }

    /// Removes every queue whose first message is `expireAfter` ms old or older and returns,
    /// for each, the destination and the distinct senders in first-sent order.
    mutating func expire(now: Int64, expireAfter: Int64) -> [(Destination, [String])] {
        var expired: [(Destination, [String])] = []
        for (destination, queue) in queues where now - queue.createdAt >= expireAfter {
            var senders: [String] = []
            var seen = Set<String>()
            for message in queue.messages where seen.insert(message.source).inserted {
                senders.append(message.source)
            }
            expired.append((destination, senders))
        }
        for (destination, _) in expired {
            if let queue = queues.removeValue(forKey: destination) { forget(queue) }
        }
        return expired
    }

    private mutating func forget(_ queue: Queue) {
        messageCount -= queue.messages.count
        byteCount -= queue.bytes
    }
}
