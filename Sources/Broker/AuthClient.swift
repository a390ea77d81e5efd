import IPC
import Logging
import NIOCore
import PeerProtocol

/// The broker's side of the auth helper's channel. It only moves bytes: it puts the engine's
/// ``AuthorizationQuery`` to the helper with a deadline and passes the answer back through
/// `answer` (given at init, for answers that arrive later), and forwards `connection` /
/// `disconnect` events. What an answer means is the engine's business. Lives on the broker's
/// event loop; a reader thread turns the helper's frames into loop tasks. Every failure — no
/// helper, a dead or misbehaving helper, a late answer — is answered as a failure, never an allow.
final class AuthClient {
    /// Receives the answer to a query that arrived after ``ask(_:)`` returned.
    typealias Answer = (_ query: AuthorizationQuery, _ answer: AuthorizationAnswer) -> Void

    private let loop: any EventLoop
    private let logger: Logger
    private let answer: Answer
    var timeoutMs: Int64
    /// Whether `forward` sends events at all (BrokerSettings.authEvents): each costs a message
    /// on both sides, per registration and per departure.
    var forwardsEvents = true
    private var link: (any AuthLink)?
    private var generation = 0
    private var nextRequestID: UInt32 = 0
    private var pending: [UInt32: AuthorizationQuery] = [:]
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

    /// The most frames held back; past it a question fails (`Error on Auth`, logged) and an
    /// event is dropped (logged). Each is at most ~5 KiB, usually ~300 bytes.
    static let maxUnsent = 4096
    /// When a full channel is tried again (NIO cannot watch the descriptor for POLLOUT without
    /// owning it): after 1 ms, doubling to 64 ms while nothing goes through (a stopped helper).
    static let firstRetry = TimeAmount.milliseconds(1)
    static let longestRetry = TimeAmount.milliseconds(64)


    init(loop: any EventLoop, timeoutMs: Int64, logger: Logger, answer: @escaping Answer) {
        self.loop = loop
        self.timeoutMs = timeoutMs
        self.logger = logger
        self.answer = answer
    }

    /// Questions waiting for their answer.
    var waiting: Int { pending.count }
    /// Frames waiting for room in the channel.
    var held: Int { unsent.count }

    /// Uses `channel` from now on (the helper started or was restarted), with a reader thread
    /// for its answers; questions still open on the previous channel fail.
    func attach(_ channel: HandoffChannel) {
        let current = attach(link: channel)
        do {
            try channel.setNonBlocking(true)
        } catch {
            logger.error("auth helper channel unusable: \(error)")
            link = nil
            return
        }
        let bound = NIOLoopBound(self, eventLoop: loop)
        FrameReader.start(channel: channel, peer: "the auth helper") { event in
            let verdict: AuthLinkEvent
            switch event {
            case .frame(let type, let requestID, let payload):
                do throws(IPCError) {
                    guard type == .authVerdict else { throw IPCError(.wrongDirection, "the auth helper does not send \(type)") }
                    verdict = .verdict(requestID: requestID, try AuthVerdict(decoding: payload))
                } catch {
                    verdict = .closed("bad frame from the auth helper: \(error)")
                }
            case .closed(let why):
                verdict = .closed(why)
            }
            bound.eventLoop.execute { bound.value.handle(verdict, generation: current) }
        }
        logger.info("auth helper connected")
    }

    /// Uses `link` from now on; returns its generation, which ``handle(_:generation:)`` is told
    /// with each event from it (events of a replaced link are ignored).
    @discardableResult
    func attach(link: any AuthLink) -> Int {
        failAll("the auth helper was replaced")
        generation += 1
        self.link = link
        return generation
    }

    /// Puts `query` to the helper. Returns the answer at once when the question cannot go out
    /// (it does not fit the channel's caps, no helper is connected, the channel failed or is
    /// full); nil when the answer comes later, through `answer`, exactly once.
    func ask(_ query: AuthorizationQuery) -> AuthorizationAnswer? {
        let message = AuthQuery(id: query.id, token: query.token, key: query.key, ip: query.ip, version: query.version)
        guard message.fitsCaps else { return .unaskable }
        guard let link else {
            logger.warning("no auth helper is connected; denying \(query.id)")
            return .failed
        }
        nextRequestID &+= 1
        if nextRequestID == 0 { nextRequestID = 1 }
        let requestID = nextRequestID
        // fitsCaps was checked above, so this does not throw (AuthQuery.encodeChecked checks
        // only the caps: one encoding, no decode-and-compare).
        if let refusal = transmit(try? EncodedFrame(message, requestID: requestID), over: link) {
            logger.error("cannot ask the auth helper (\(refusal)); denying \(query.id)")
            return .failed
        }
        pending[requestID] = query
        deadlines.append((requestID, loop.now + .milliseconds(timeoutMs)))
        if timer == nil { armTimer() }
        return nil
    }

    /// Forwards a registration or departure to the helper (best effort: an event that does not
    /// fit in the channel is dropped and logged).
    func forward(_ event: PeerEvent) {
        guard forwardsEvents, let link else { return }
        let message: PeerEventMessage
        switch event {
        case .connected(let id, let key, _, let ip):
            message = PeerEventMessage(kind: .connection, id: id, key: key, ip: ip)
        case .disconnected(let id, let key, _, let ip, _):
            message = PeerEventMessage(kind: .disconnect, id: id, key: key, ip: ip)
        }
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
    private func transmit(_ frame: EncodedFrame?, over link: any AuthLink) -> String? {
        guard let frame else { return "the question does not fit its frame" }
        if unsent.isEmpty {
            do {
                try link.sendFrame(frame)
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
                try link.sendFrame(frame)
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

    /// An event from the link of `generation` (the reader thread's, or a test's).
    func handle(_ event: AuthLinkEvent, generation: Int) {
        guard generation == self.generation else { return }
        switch event {
        case .verdict(let requestID, let verdict):
            guard let entry = pending.removeValue(forKey: requestID) else {
                logger.debug("late or unknown auth verdict #\(requestID) ignored")
                return
            }
            dropAnswered()
            answer(entry, verdict.allow ? .allow : .deny(verdict.reason))
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
        let now = loop.now
        while let first = deadlines.first, first.at <= now {
            deadlines.removeFirst()
            guard let entry = pending.removeValue(forKey: first.requestID) else { continue }
            logger.warning("the auth helper did not answer within \(timeoutMs) ms; denying \(entry.id)")
            answer(entry, .timedOut)
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
            answer(entry, .failed)
        }
    }
}
