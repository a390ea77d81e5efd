import Glibc
import IPC

/// Where ``AuthClient`` writes its frames: the auth helper's channel in the broker, a recording
/// stand-in in the tests (which must not start a reader thread on a virtual-time loop).
protocol AuthLink: AnyObject {
    /// Sends one frame; throws ``IPCError/Code/wouldBlock`` when the channel has no room now.
    func sendFrame(_ frame: EncodedFrame) throws(IPCError)
}

extension HandoffChannel: AuthLink {
    func sendFrame(_ frame: EncodedFrame) throws(IPCError) {
        try send(frame)
    }
}

/// What reaches ``AuthClient`` from the helper's side of the channel.
enum AuthLinkEvent: Sendable {
    case verdict(requestID: UInt32, AuthVerdict)
    case closed(String)
}

/// A thread that waits for the helper's verdicts (poll + non-blocking receive) and hands them
/// to the loop; it ends at EOF or at the first bad frame.
enum AuthReader {
    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    static func start(channel: HandoffChannel, deliver: @escaping @Sendable (AuthLinkEvent) -> Void) {
        let body = Unmanaged.passRetained(Body { readLoop(channel, deliver) })
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

    private static func readLoop(_ channel: HandoffChannel, _ deliver: @Sendable (AuthLinkEvent) -> Void) {
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
                        deliver(.closed("the auth helper closed its channel"))
                        return
                    }
                    let verdict = try frame.decode(AuthVerdict.self)
                    deliver(.verdict(requestID: frame.requestID, verdict))
                } catch where error.code == .wouldBlock {
                    break
                } catch {
                    deliver(.closed("bad frame from the auth helper: \(error)"))
                    return
                }
            }
        }
    }
}
