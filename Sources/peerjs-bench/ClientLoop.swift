import CEpoll
import Glibc

/// The load generator's event loop: one epoll descriptor, a handful of timers and the peers'
/// non-blocking sockets, all on the calling thread. Not SwiftNIO's: on these two shared cores
/// the client's CPU per connection caps what any server can show, and NIO's ClientBootstrap
/// (futures, channel set-up, cached addresses, three epoll changes) was half of the ~120–200 µs
/// the NIO client spent per connection (BENCHMARKS.md, "The load generator").
final class ClientLoop {
    /// A scheduled call; `cancel()` stops it (and a repeating one for good).
    final class Timer {
        fileprivate var deadline: UInt64
        fileprivate let interval: UInt64?
        fileprivate let body: () -> Void
        fileprivate var cancelled = false

        fileprivate init(deadline: UInt64, interval: UInt64?, body: @escaping () -> Void) {
            self.deadline = deadline
            self.interval = interval
            self.body = body
        }

        func cancel() { cancelled = true }
    }

    /// epoll's event bits.
    enum Event {
        static let readable = UInt32(CEPOLL_IN)
        static let writable = UInt32(CEPOLL_OUT)
        static let error = UInt32(CEPOLL_ERR)
        static let hangUp = UInt32(CEPOLL_HUP)
        static let peerHangUp = UInt32(CEPOLL_RDHUP)
    }

    private let epoll: Int32
    /// Peers by descriptor (descriptors stay below the process's limit, raised at start).
    private var peers: [PeerConnection?]
    private var timers: [Timer] = []
    private var dirty: [PeerConnection] = []
    private var stopped = false
    private let eventCapacity = 512
    private var readyFDs: [Int32]
    private var readyEvents: [UInt32]
    /// Where reads land before a peer parses them (one peer at a time; a peer keeps only the
    /// tail of an incomplete frame).
    let scratch: UnsafeMutableRawBufferPointer

    init(descriptorLimit: Int) throws {
        epoll = cepoll_create()
        guard epoll >= 0 else { throw ClientError.system("epoll_create1", errno) }
        peers = Array(repeating: nil, count: descriptorLimit + 1)
        readyFDs = Array(repeating: -1, count: eventCapacity)
        readyEvents = Array(repeating: 0, count: eventCapacity)
        scratch = .allocate(byteCount: 256 * 1024, alignment: 16)
        // A write to a socket the server has closed must fail with EPIPE, not kill the bench.
        signal(SIGPIPE, SIG_IGN)
    }

    deinit {
        close(epoll)
        scratch.deallocate()
    }

    // MARK: Timers

    @discardableResult
    func schedule(after seconds: Double, _ body: @escaping () -> Void) -> Timer {
        let timer = Timer(deadline: nowNanos() &+ UInt64(max(0, seconds) * 1e9), interval: nil, body: body)
        timers.append(timer)
        return timer
    }

    /// Calls `body` every `seconds`, first after `seconds`.
    func every(_ seconds: Double, _ body: @escaping () -> Void) -> Timer {
        let interval = UInt64(max(0.0005, seconds) * 1e9)
        let timer = Timer(deadline: nowNanos() &+ interval, interval: interval, body: body)
        timers.append(timer)
        return timer
    }

    /// Runs the due timers; returns how long epoll may wait for the next one (ns, ≤ 100 ms).
    private func runTimers() -> Int64 {
        let now = nowNanos()
        for timer in timers.filter({ !$0.cancelled && $0.deadline <= now }) where !timer.cancelled {
            if let interval = timer.interval {
                timer.deadline = now &+ interval
            } else {
                timer.cancelled = true
            }
            timer.body()
        }
        // After the bodies: they may have added or cancelled timers.
        timers.removeAll { $0.cancelled }
        let next = timers.lazy.map(\.deadline).min() ?? .max
        let after = nowNanos()
        return next <= after ? 0 : Int64(min(100_000_000, next - after))
    }

    // MARK: Running

    /// Runs until `stop()`.
    func run() {
        while !stopped {
            let timeout = runTimers()
            if stopped { break }
            flushDirty()
            let count = cepoll_wait(epoll, &readyFDs, &readyEvents, Int32(eventCapacity), timeout)
            if count < 0 {
                if errno == EINTR { continue }
                fatalError("epoll_wait: \(String(cString: strerror(errno)))")
            }
            for i in 0..<Int(count) {
                let fd = Int(readyFDs[i])
                guard fd >= 0, fd < peers.count, let peer = peers[fd] else { continue }
                peer.ready(readyEvents[i])
            }
            flushDirty()
        }
    }

    func stop() { stopped = true }

    // MARK: Peers' sockets

    func add(_ peer: PeerConnection, fd: Int32, writable: Bool) -> Int32 {
        guard Int(fd) < peers.count else { return EMFILE }
        peers[Int(fd)] = peer
        return cepoll_add(epoll, fd, Self.interest(writable: writable)) == 0 ? 0 : errno
    }

    func watchWritable(fd: Int32, _ on: Bool) {
        _ = cepoll_modify(epoll, fd, Self.interest(writable: on))
    }

    private static func interest(writable: Bool) -> UInt32 {
        Event.readable | Event.peerHangUp | (writable ? Event.writable : 0)
    }

    /// Forgets `fd` (the caller closes it; close(2) takes it out of the epoll set).
    func remove(fd: Int32) {
        if Int(fd) < peers.count { peers[Int(fd)] = nil }
    }

    /// `peer` has queued frames to write at the end of this round of events.
    func markDirty(_ peer: PeerConnection) { dirty.append(peer) }

    private func flushDirty() {
        guard !dirty.isEmpty else { return }
        let batch = dirty
        dirty.removeAll(keepingCapacity: true)
        for peer in batch { peer.flush() }
    }
}

/// A system call that failed, with errno's text.
enum ClientError: Error, CustomStringConvertible {
    case system(String, Int32)

    var description: String {
        switch self {
        case .system(let call, let code): "\(call): \(String(cString: strerror(code)))"
        }
    }
}
