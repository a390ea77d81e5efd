import Glibc
import IPC

/// A thread that waits for frames on a channel (poll + non-blocking receive) and hands each to
/// the loop as bytes; it ends at EOF or at the first bad frame. The loop decodes them.
enum FrameReader {
    enum Event: Sendable {
        case frame(FrameType, requestID: UInt32, payload: [UInt8])
        case closed(String)
    }

    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    static func start(channel: HandoffChannel, peer: String, deliver: @escaping @Sendable (Event) -> Void) {
        let body = Unmanaged.passRetained(Body { readLoop(channel, peer, deliver) })
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { argument in
            guard let argument else { return nil }
            Unmanaged<Body>.fromOpaque(argument).takeRetainedValue().run()
            return nil
        }, body.toOpaque())
        if rc != 0 {
            body.release()
            deliver(.closed("cannot start the reader thread (error \(rc))"))
        } else {
            pthread_detach(thread)
        }
    }

    private static func readLoop(_ channel: HandoffChannel, _ peer: String, _ deliver: @Sendable (Event) -> Void) {
        while true {
            var entry = pollfd(fd: channel.rawFD, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, -1) < 0 {
                if errno == EINTR { continue }
                deliver(.closed("poll failed: errno \(errno)"))
                return
            }
            while true {
                do {
                    guard let frame = try channel.receive() else {
                        deliver(.closed("\(peer) closed its channel"))
                        return
                    }
                    deliver(.frame(frame.type, requestID: frame.requestID, payload: frame.payload))
                } catch where error.code == .wouldBlock {
                    break
                } catch {
                    deliver(.closed("bad frame from \(peer): \(error)"))
                    return
                }
            }
        }
    }
}
