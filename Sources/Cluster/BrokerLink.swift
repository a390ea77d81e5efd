import Glibc
import IPC
import NIOConcurrencyHelpers

/// The cluster role's end of the broker's channel: a reader thread that turns the broker's
/// frames into an `AsyncStream` (claims and releases must be handled in the order they were
/// sent), and sends that never wait on a full channel for long: a broker that stops reading
/// costs it its own deliveries (logged), never the role's loop.
final class BrokerLink: Sendable {
    enum Event: Sendable {
        case claim(requestID: UInt32, ClusterClaim)
        case release(ClusterRelease)
        case send(ClusterRelay)
        case closed(String)
    }

    private let channel: HandoffChannel
    let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    /// Frames dropped because the broker's channel stayed full.
    private let dropped = NIOLockedValueBox(0)

    init(channel: HandoffChannel) {
        self.channel = channel
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .unbounded)
    }

    /// Starts the reader thread. The broker's frames are bounded by the channel itself (a
    /// SEQPACKET socket's buffer): the stream holds what has been read and not yet handled.
    func start() {
        let body = Unmanaged.passRetained(ThreadBody { [self] in readLoop() })
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { argument in
            guard let argument else { return nil }
            Unmanaged<ThreadBody>.fromOpaque(argument).takeRetainedValue().run()
            return nil
        }, body.toOpaque())
        if rc != 0 {
            body.release()
            continuation.yield(.closed("cannot start the reader thread (error \(rc))"))
        } else {
            pthread_detach(thread)
        }
    }

    private func readLoop() {
        while true {
            do {
                guard let frame = try channel.receive() else {
                    continuation.yield(.closed("the broker closed its channel"))
                    return
                }
                switch frame.type {
                case .clusterClaim: continuation.yield(.claim(requestID: frame.requestID, try frame.decode(ClusterClaim.self)))
                case .clusterRelease: continuation.yield(.release(try frame.decode(ClusterRelease.self)))
                case .clusterSend: continuation.yield(.send(try frame.decode(ClusterSend.self).relay))
                default: throw IPCError(.wrongDirection, "the broker does not send \(frame.type) to the cluster role")
                }
            } catch {
                continuation.yield(.closed("bad frame from the broker: \(error)"))
                return
            }
        }
    }

    /// Sends `message` to the broker, waiting up to about a second for room; false (and
    /// counted) when it could not go.
    @discardableResult
    func send<M: IPCMessage>(_ message: M, requestID: UInt32 = 0) -> Bool {
        guard let frame = try? EncodedFrame(message, requestID: requestID) else { return false }
        for attempt in 0..<200 {
            do {
                try channel.send(frame, nonBlocking: true)
                return true
            } catch where error.code == .wouldBlock {
                var entry = pollfd(fd: channel.rawFD, events: Int16(POLLOUT), revents: 0)
                _ = poll(&entry, 1, attempt < 10 ? 1 : 10)
            } catch {
                return false
            }
        }
        dropped.withLockedValue { $0 += 1 }
        return false
    }

    var droppedCount: Int { dropped.withLockedValue { $0 } }
}

final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
