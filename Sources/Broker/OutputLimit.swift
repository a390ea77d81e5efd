import Logging
import NIOCore

/// The bound on what the broker holds for one client (`--output_limit`). Every channel's write
/// buffer high-water mark is the limit (``BrokerServer``'s `adopt`), so a channel turns unwritable
/// once that many bytes wait for a client that does not read. Writers check `isWritable` first
/// (``ConnectionTable/send(_:to:)``, pongs, pings), and the handler at the end of each pipeline
/// (``PeerSocketHandler``, ``HTTPRouteHandler``) calls ``closeIfStuck(_:address:logger:)`` from
/// `channelWritabilityChanged`.
enum OutputLimit {
    /// High-water mark `limit`, low-water mark half of it.
    static func waterMark(_ limit: Int) -> ChannelOptions.Types.WriteBufferWaterMark {
        ChannelOptions.Types.WriteBufferWaterMark(low: limit / 2, high: max(1, limit))
    }

    /// `channel` turned unwritable: it is closed, with a notice, on the next turn of the loop if
    /// it still is then. Deferred, because the event fires inside the write that crossed the
    /// mark — often a relay in the middle of the engine, which a close (and its
    /// `connectionClosed`) must not re-enter — and because the flush that ends the current unit
    /// of work may still hand the bytes to the kernel. Meanwhile writers see `isWritable` false:
    /// relays fail (the sender gets `LEAVE`, PROTOCOL.md §7.4), pongs are not written.
    static func closeIfStuck(_ channel: any Channel, address: String, state: BrokerState) {
        guard !channel.isWritable else { return }
        let bound = NIOLoopBound(state, eventLoop: channel.eventLoop)
        channel.eventLoop.execute {
            guard channel.isActive, !channel.isWritable else { return }
            let waiting = (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
            bound.value.counters.outputLimitHits += 1
            bound.value.logger.notice("closing \(address): it does not read, \(waiting) bytes waiting (--output_limit)")
            channel.close(promise: nil)
        }
    }
}
