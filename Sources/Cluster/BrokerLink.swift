import Glibc
import IPC
import NIOConcurrencyHelpers

/// The cluster role's end of the broker's channel: a reader thread that turns the broker's
/// frames into an `AsyncStream` (claims and releases are handled in the order they were sent),
/// and a writer thread that sends to the broker, so the role's event loop never waits on a full
/// channel. Both ends are bounded: the reader stops reading while too much waits to be handled
/// (the channel then fills and the broker holds back, refusing claims and relays), and frames
/// for a broker that stops reading are dropped past a limit, counted and logged.
final class BrokerLink: Sendable {
    enum Event: Sendable {
        case claim(requestID: UInt32, ClusterClaim)
        case release(ClusterRelease)
        case send(ClusterRelay)
        case closed(String)
    }

    /// The most frames, and bytes, read from the broker and not yet handled.
    static let maxQueued = 4096
    static let maxQueuedBytes = 16 << 20
    /// The most bytes waiting to be sent to the broker.
    static let maxOutgoingBytes = 16 << 20

    private let channel: HandoffChannel
    let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    /// Frames read and not yet handled: (count, bytes).
    private let queued = NIOLockedValueBox((count: 0, bytes: 0))
    /// Frames waiting for the writer thread, and their bytes.
    private let outgoing = ConditionLock(value: 0)
    private let outbox = NIOLockedValueBox((frames: [EncodedFrame](), bytes: 0, closed: false))
    /// Frames to the broker dropped because it did not take them.
    private let dropped = NIOLockedValueBox(0)

    init(channel: HandoffChannel) {
        self.channel = channel
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .unbounded)
    }

    /// Starts the reader and the writer thread.
    func start() {
        for body in [{ [self] in readLoop() }, { [self] in writeLoop() }] {
            let box = Unmanaged.passRetained(ThreadBody(body))
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { argument in
                guard let argument else { return nil }
                Unmanaged<ThreadBody>.fromOpaque(argument).takeRetainedValue().run()
                return nil
            }, box.toOpaque())
            if rc != 0 {
                box.release()
                continuation.yield(.closed("cannot start a channel thread (error \(rc))"))
            } else {
                pthread_detach(thread)
            }
        }
    }

    /// The role took one event off the stream (`bytes`: what ``cost(of:)`` said).
    func handled(_ event: Event) {
        let cost = Self.cost(of: event)
        queued.withLockedValue { $0 = ($0.count - 1, $0.bytes - cost) }
    }

    private static func cost(of event: Event) -> Int {
        switch event {
        case .send(let relay): relay.frame.count + 128
        default: 128
        }
    }

    private func readLoop() {
        while true {
            // Backpressure: while too much waits, the frames stay in the channel.
            var waits = 0
            while queued.withLockedValue({ $0.count >= Self.maxQueued || $0.bytes >= Self.maxQueuedBytes }) {
                var nothing = pollfd(fd: -1, events: 0, revents: 0)
                _ = poll(&nothing, 0, Int32(min(50, 1 + waits)))
                waits += 1
            }
            do {
                guard let frame = try channel.receive() else {
                    continuation.yield(.closed("the broker closed its channel"))
                    return
                }
                let event: Event
                switch frame.type {
                case .clusterClaim: event = .claim(requestID: frame.requestID, try frame.decode(ClusterClaim.self))
                case .clusterRelease: event = .release(try frame.decode(ClusterRelease.self))
                case .clusterSend: event = .send(try frame.decode(ClusterSend.self).relay)
                default: throw IPCError(.wrongDirection, "the broker does not send \(frame.type) to the cluster role")
                }
                let cost = Self.cost(of: event)
                queued.withLockedValue { $0 = ($0.count + 1, $0.bytes + cost) }
                continuation.yield(event)
            } catch {
                continuation.yield(.closed("bad frame from the broker: \(error)"))
                return
            }
        }
    }

    /// Queues `message` for the broker; false (and counted) when more than
    /// ``maxOutgoingBytes`` already wait or the channel is gone.
    @discardableResult
    func send<M: IPCMessage>(_ message: M, requestID: UInt32 = 0) -> Bool {
        guard let frame = try? EncodedFrame(message, requestID: requestID) else { return false }
        let accepted = outbox.withLockedValue { box -> Bool in
            guard !box.closed, box.bytes + frame.payload.count <= Self.maxOutgoingBytes else { return false }
            box.frames.append(frame)
            box.bytes += frame.payload.count
            return true
        }
        guard accepted else {
            dropped.withLockedValue { $0 += 1 }
            return false
        }
        outgoing.lock()
        outgoing.unlock(withValue: 1)
        return true
    }

    private func writeLoop() {
        while true {
            outgoing.lock(whenValue: 1)
            outgoing.unlock(withValue: 0)
            let batch = outbox.withLockedValue { box -> [EncodedFrame] in
                defer { box.frames = []; box.bytes = 0 }
                return box.frames
            }
            for frame in batch {
                do {
                    try channel.send(frame)
                } catch {
                    outbox.withLockedValue { $0.closed = true }
                    continuation.yield(.closed("cannot send to the broker: \(error)"))
                    return
                }
            }
        }
    }

    var droppedCount: Int { dropped.withLockedValue { $0 } }
}

final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
