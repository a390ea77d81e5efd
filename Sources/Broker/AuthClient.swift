import Glibc
import IPC
import Logging
import NIOCore
import PeerProtocol

/// The broker's side of the auth helper: asks before a WebSocket client registers, with a
/// deadline, and forwards `connection` / `disconnect` events. Lives on the broker's event loop;
/// a reader thread turns the helper's verdicts into loop tasks. Every failure — no helper, a
/// dead or misbehaving helper, a late answer — is a denial, never an allow.
final class AuthClient {
    /// What the decision callback is told: the client-visible reason of a denial, or nil.
    typealias Decide = (_ connection: ConnectionID, _ request: RegistrationRequest, _ denial: String?) -> Void

    static let timeoutReason = "Auth Timeout"
    static let failureReason = "Error on Auth"

    private struct Pending {
        let connection: ConnectionID
        let request: RegistrationRequest
        let ip: String
    }

    /// What the reader thread reports.
    enum ReaderEvent: Sendable {
        case verdict(requestID: UInt32, AuthVerdict)
        case closed(String)
    }

    private let loop: any EventLoop
    private let logger: Logger
    var timeoutMs: Int64
    /// Whether `forward` sends events at all (BrokerSettings.authEvents): each costs a message
    /// on both sides, per registration and per departure.
    var forwardsEvents = true {
        didSet { if !forwardsEvents { addresses.removeAll() } }
    }
    var decide: Decide = { _, _, _ in }
    private var link: HandoffChannel?
    private var generation = 0
    private var nextRequestID: UInt32 = 0
    private var pending: [UInt32: Pending] = [:]
    /// Deadlines of the questions in the order they were asked (answered ones are skipped when
    /// they reach the front), and one timer for the oldest: a timer per question cost a
    /// schedule and a cancel per registration.
    private var deadlines = CircularBuffer<(requestID: UInt32, at: NIODeadline)>()
    private var timer: Scheduled<Void>?
    /// Frames the channel had no room for, sent in order as the helper catches up: the socket
    /// holds ~270 questions (its send buffer, 208 KiB by default), and a helper a few
    /// milliseconds behind a burst of registrations must slow them down, not deny them.
    private var unsent = CircularBuffer<EncodedFrame>()
    private var retry: Scheduled<Void>?
    private var retryDelay = AuthClient.firstRetry

    /// The most frames held back; past it a question is denied (`Error on Auth`, logged) and an
    /// event dropped (logged). Each is at most ~2 KiB, usually ~300 bytes.
    static let maxUnsent = 4096
    /// When a full channel is tried again (NIO cannot watch the descriptor for POLLOUT without
    /// owning it): after 1 ms, doubling to 64 ms while nothing goes through (a stopped helper).
    static let firstRetry = TimeAmount.milliseconds(1)
    static let longestRetry = TimeAmount.milliseconds(64)

    /// Client addresses of allowed peers, for their events (a closed connection has left the
    /// connection table by the time its `disconnect` event fires).
    private var addresses: [ConnectionID: String] = [:]

    init(loop: any EventLoop, timeoutMs: Int64, logger: Logger) {
        self.loop = loop
        self.timeoutMs = timeoutMs
        self.logger = logger
    }

    /// Uses `channel` from now on (the helper started or was restarted); questions still open on
    /// the previous channel are denied.
    func attach(_ channel: HandoffChannel) {
        failAll("the auth helper was replaced")
        generation += 1
        link = channel
        do {
            try channel.setNonBlocking(true)
        } catch {
            logger.error("auth helper channel unusable: \(error)")
            link = nil
            return
        }
        let bound = NIOLoopBound(self, eventLoop: loop)
        let current = generation
        AuthReader.start(channel: channel) { event in
            bound.eventLoop.execute { bound.value.handle(event, generation: current) }
        }
        logger.info("auth helper connected")
    }

    /// Asks whether the client may register; `decide` is called exactly once, on this loop.
    func ask(_ connection: ConnectionID, request: RegistrationRequest, ip: String) {
        let query = AuthQuery(
            id: request.id ?? "", token: request.token ?? "", key: request.key ?? "", ip: ip, version: request.version ?? "")
        guard query.fitsCaps else {
            decide(connection, request, "Invalid ID")
            return
        }
        guard let link else {
            logger.warning("no auth helper is connected; denying \(query.id)")
            decide(connection, request, Self.failureReason)
            return
        }
        nextRequestID &+= 1
        if nextRequestID == 0 { nextRequestID = 1 }
        let requestID = nextRequestID
        // fitsCaps was checked above, so this does not throw (AuthQuery.encodeChecked checks
        // only the caps: one encoding, no decode-and-compare).
        if let refusal = transmit(try? EncodedFrame(query, requestID: requestID), over: link) {
            logger.error("cannot ask the auth helper (\(refusal)); denying \(query.id)")
            decide(connection, request, Self.failureReason)
            return
        }
        pending[requestID] = Pending(connection: connection, request: request, ip: ip)
        deadlines.append((requestID, .now() + .milliseconds(timeoutMs)))
        if timer == nil { armTimer() }
    }

    /// Forwards a registration or departure to the helper (best effort: an event that does not
    /// fit in the channel is dropped and logged).
    func forward(_ event: PeerEvent) {
        guard forwardsEvents else { return }
        let message: PeerEventMessage
        switch event {
        case .connected(let id, let key, let connection):
            message = PeerEventMessage(kind: .connection, id: id, key: key, ip: addresses[connection] ?? "")
        case .disconnected(let id, let key, let connection, _):
            message = PeerEventMessage(kind: .disconnect, id: id, key: key, ip: addresses.removeValue(forKey: connection) ?? "")
        }
        guard let link else { return }
        let frame: EncodedFrame
        do {
            frame = try EncodedFrame(message)
        } catch {
            logger.warning("could not pass a \(message.kind) event for \(message.id) to the auth helper: \(error)")
            return
        }
        if let refusal = transmit(frame, over: link) {
            logger.warning("could not pass a \(message.kind) event for \(message.id) to the auth helper: \(refusal)")
        }
    }

    /// Sends `frame` now, or queues it behind earlier ones while the channel is full. Returns why
    /// it was neither (the queue is full, or the channel failed), or nil.
    private func transmit(_ frame: EncodedFrame?, over link: HandoffChannel) -> String? {
        guard let frame else { return "the question does not fit its frame" }
        if unsent.isEmpty {
            do {
                try link.send(frame)
                return nil
            } catch where error.code == .wouldBlock {
            } catch {
                linkFailed("send failed: \(error)")
                return "\(error)"
            }
        }
        guard unsent.count < Self.maxUnsent else {
            return "\(unsent.count) frames already wait for room in the channel; the helper is not keeping up"
        }
        unsent.append(frame)
        if retry == nil { scheduleRetry() }
        return nil
    }

    private func scheduleRetry() {
        let bound = NIOLoopBound(self, eventLoop: loop)
        retry = loop.scheduleTask(in: retryDelay) { bound.value.sendUnsent() }
    }

    /// Sends what waits, in order, until the channel is full again; questions that timed out
    /// meanwhile are not sent.
    private func sendUnsent() {
        retry = nil
        guard let link else { return }
        var progressed = false
        while let frame = unsent.first {
            if frame.type == .authQuery, pending[frame.requestID] == nil {
                unsent.removeFirst()
                continue
            }
            do {
                try link.send(frame)
                unsent.removeFirst()
                progressed = true
            } catch where error.code == .wouldBlock {
                retryDelay = progressed ? Self.firstRetry : min(retryDelay * 2, Self.longestRetry)
                scheduleRetry()
                return
            } catch {
                linkFailed("send failed: \(error)")
                return
            }
        }
        retryDelay = Self.firstRetry
    }

    /// A connection that was allowed but then refused by the engine, or never got an event.
    func forget(_ connection: ConnectionID) {
        addresses[connection] = nil
    }

    private func handle(_ event: ReaderEvent, generation: Int) {
        guard generation == self.generation else { return }
        switch event {
        case .verdict(let requestID, let verdict):
            guard let entry = pending.removeValue(forKey: requestID) else {
                logger.debug("late or unknown auth verdict #\(requestID) ignored")
                return
            }
            dropAnswered()
            if verdict.allow && forwardsEvents { addresses[entry.connection] = entry.ip }
            let reason = verdict.reason.isEmpty ? Self.failureReason : verdict.reason
            decide(entry.connection, entry.request, verdict.allow ? nil : reason)
        case .closed(let why):
            linkFailed(why)
        }
    }

    /// Schedules the timer for the oldest question still open, if any. Deadlines are in asking
    /// order (a reload that shortens the timeout makes later ones wait for earlier ones: late by
    /// at most the old timeout).
    private func armTimer() {
        dropAnswered()
        guard let first = deadlines.first else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        timer = loop.scheduleTask(deadline: first.at) { bound.value.expireOverdue() }
    }

    /// Forgets the deadlines of answered questions at the front, so the queue holds about the
    /// questions in flight rather than a timeout's worth of answered ones.
    private func dropAnswered() {
        while let first = deadlines.first, pending[first.requestID] == nil { deadlines.removeFirst() }
    }

    private func expireOverdue() {
        timer = nil
        let now = NIODeadline.now()
        while let first = deadlines.first, first.at <= now {
            deadlines.removeFirst()
            guard let entry = pending.removeValue(forKey: first.requestID) else { continue }
            logger.warning("the auth helper did not answer within \(timeoutMs) ms; denying \(entry.request.id ?? "")")
            decide(entry.connection, entry.request, Self.timeoutReason)
        }
        armTimer()
    }

    private func linkFailed(_ why: String) {
        guard link != nil else { return }
        logger.error("auth helper channel lost (\(why)); registrations are denied until the supervisor restarts it")
        link = nil
        failAll(why)
    }

    private func failAll(_ why: String) {
        let open = pending
        pending = [:]
        deadlines.removeAll()
        timer?.cancel()
        timer = nil
        unsent.removeAll()
        retry?.cancel()
        retry = nil
        retryDelay = Self.firstRetry
        for (_, entry) in open.sorted(by: { $0.key < $1.key }) {
            decide(entry.connection, entry.request, Self.failureReason)
        }
    }
}

/// A thread that waits for the helper's verdicts (poll + non-blocking receive) and hands them
/// to the loop; it ends at EOF or at the first bad frame.
enum AuthReader {
    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    static func start(channel: HandoffChannel, deliver: @escaping @Sendable (AuthClient.ReaderEvent) -> Void) {
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

    private static func readLoop(_ channel: HandoffChannel, _ deliver: @Sendable (AuthClient.ReaderEvent) -> Void) {
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
