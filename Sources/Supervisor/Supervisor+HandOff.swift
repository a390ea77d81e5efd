import CShim
import Glibc
import IPC
import Logging

/// A connection accepted but not yet taken by the broker: it waits for the next broker rather
/// than being dropped.
struct PendingHandoff {
    let descriptor: Int32
    let handoff: ConnectionHandoff
}

/// The accept side's own state, apart from the policy's admission: the one connection waiting
/// for room, the pause after a failure that would repeat at once, and the rate-limited logs.
struct HandOffState {
    static let repeatLogIntervalMs: Int64 = 10_000
    static let pauseMs: Int64 = 100

    var pending: PendingHandoff?
    var pausedUntil: Int64 = 0
    /// Connections accepted and closed at once because the broker had no room, since the last
    /// log line about it; and when that line was written.
    var shed = 0
    var shedLoggedAt: Int64 = 0
    /// Failed accepts or hand-offs (EMFILE, ENFILE, ENOBUFS) since the last log line about them.
    var failures = 0
    var failureLoggedAt: Int64 = 0

    /// Whether the listeners may be polled: nothing waits, and no pause.
    func mayAccept(now: Int64) -> Bool { pending == nil && now >= pausedUntil }

    /// Whether a connection waits for room in the broker's channel (POLLOUT).
    func waitsForRoom(now: Int64) -> Bool { pending != nil && now >= pausedUntil }

    mutating func dropPending() {
        if let pending { close(pending.descriptor) }
        pending = nil
    }
}

/// Accept and hand off: every connection goes to the broker with SCM_RIGHTS, only against its
/// credit; without credit it waits in the backlog, or is shed when the broker said it is full.
extension Supervisor {
    func acceptConnections(on listener: Listener) {
        for _ in 0..<256 {
            guard policy.admits, handOff.pending == nil, let channel = children[.broker]?.channel else { return }
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
            guard policy.canHandOff else {
                // The broker is at its connection budget: refuse now rather than leave the client
                // waiting in the backlog (issue 15; README "Limits").
                close(fd)
                shedOne()
                continue
            }
            let handoff = ConnectionHandoff(peer: PeerAddress(storage), tls: listener.tls, acceptedAtNs: monotonicNanoseconds())
            hand(PendingHandoff(descriptor: fd, handoff: handoff), over: channel)
        }
    }

    private func shedOne() {
        handOff.shed += 1
        let now = monotonicMilliseconds()
        guard now - handOff.shedLoggedAt >= HandOffState.repeatLogIntervalMs else { return }
        logger.warning("the broker is at its connection budget (--concurrent_limit + --handshake_limit, or its descriptor limit); closed \(handOff.shed) new connection(s)")
        handOff.shed = 0
        handOff.shedLoggedAt = now
    }

    /// Stops accepting for 100 ms after a failure that would repeat at once (EMFILE, ENOBUFS…),
    /// and logs it once per interval with how often it happened (`message` gets the count).
    private func pauseAccepting(_ message: (Int) -> String) {
        let now = monotonicMilliseconds()
        handOff.pausedUntil = now + HandOffState.pauseMs
        handOff.failures += 1
        if now - handOff.failureLoggedAt >= HandOffState.repeatLogIntervalMs {
            logger.error("\(message(handOff.failures))")
            handOff.failures = 0
            handOff.failureLoggedAt = now
        }
    }

    private func hand(_ connection: PendingHandoff, over channel: HandoffChannel) {
        do {
            try channel.send(connection.handoff, fd: connection.descriptor)
            close(connection.descriptor)
            feed(.handedOff)
        } catch where error.code == .wouldBlock {
            handOff.pending = connection
        } catch where [ENOBUFS, ENOMEM, ETOOMANYREFS].contains(error.code.errno ?? 0) {
            // Out of kernel memory, or too many descriptors in flight for this user: the channel
            // is fine; keep the connection and pause accepting briefly, as for EMFILE.
            handOff.pending = connection
            pauseAccepting { "hand-off to the broker failed \($0) time(s): \(error); pausing 100 ms each time" }
        } catch {
            // The broker is going away; keep the connection for the next one.
            handOff.pending = connection
            logger.warning("hand-off to the broker failed: \(error)")
            children[.broker]?.channel = nil
            feed(.channelClosed(.broker))
        }
    }

    /// Hands over the waiting connection when the broker has room for it.
    func flushPending() {
        guard let connection = handOff.pending, policy.canHandOff, let channel = children[.broker]?.channel else { return }
        handOff.pending = nil
        hand(connection, over: channel)
    }
}
