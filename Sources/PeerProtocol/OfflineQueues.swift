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
    }

    private(set) var queues: [Destination: Queue] = [:]
    private(set) var messageCount = 0
    private(set) var byteCount = 0

    enum AppendResult { case queued, full }

    mutating func append(
        _ frame: [UInt8], from source: String, to destination: Destination, now: Int64,
        limits settings: ProtocolSettings
    ) -> AppendResult {
        let existing = queues[destination]?.messages.count ?? 0
        guard existing < settings.maxQueuedPerDestination, byteCount + frame.count <= settings.maxQueuedBytes else {
            return .full
        }
        queues[destination, default: Queue(createdAt: now)].messages.append(Message(source: source, frame: frame))
        messageCount += 1
        byteCount += frame.count
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
        byteCount -= queue.messages.reduce(0) { $0 + $1.frame.count }
    }
}
