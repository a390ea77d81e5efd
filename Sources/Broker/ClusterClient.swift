import Crypto
import Glibc
import IPC
import Logging
import NIOCore
import PeerProtocol

/// The broker's side of the cluster role's channel (`--cluster`): claims and releases of ids,
/// frames for peers on other instances out, frames for local peers and the directory's changes
/// in. Like ``AuthClient`` it only moves bytes and never waits: a frame that finds the channel
/// full waits in a bounded queue, a claim that cannot go out or is not answered in time is
/// `unavailable`, and a relay that cannot go out is refused (the engine answers EXPIRE).
/// Lives on the broker's loop; a reader thread turns the role's frames into loop tasks.
final class ClusterClient {
    private let loop: any EventLoop
    private let logger: Logger
    private let engine: SignalingEngine<ConnectionTable, InMemoryRegistry>
    private let connections: ConnectionTable
    /// `concurrent_limit`, put to the directory with each claim (cluster-wide).
    var limit: Int
    private var link: (any AuthLink)?
    private var generation = 0
    private var nextRequestID: UInt32 = 0
    private var pending: [UInt32: (connection: ConnectionID, id: String, key: String, at: NIODeadline)] = [:]
    /// The channel itself, to shut it down when it misbehaves (the role then exits and the
    /// supervisor starts a fresh one).
    private var channel: HandoffChannel?
    private var timer: Scheduled<Void>?
    private var unsent = CircularBuffer<EncodedFrame>()
    private var retry: Scheduled<Void>?

    /// How long the directory may take to answer a claim before the client is refused.
    static let claimTimeout = TimeAmount.seconds(5)
    /// The most frames held back while the channel is full (each at most 64 KiB, usually < 1 KiB).
    static let maxUnsent = 1024

    init(loop: any EventLoop, engine: SignalingEngine<ConnectionTable, InMemoryRegistry>, connections: ConnectionTable,
         limit: Int, logger: Logger) {
        self.loop = loop
        self.engine = engine
        self.connections = connections
        self.limit = limit
        self.logger = logger
    }

    /// Claims waiting for their answer.
    var waiting: Int { pending.count }

    /// Uses `channel` from now on (the role started or was restarted), with a reader thread.
    func attach(_ channel: HandoffChannel) {
        let current = attach(link: channel)
        self.channel = channel
        do {
            try channel.setNonBlocking(true)
        } catch {
            logger.error("cluster role channel unusable: \(error)")
            link = nil
            return
        }
        // A new role (a restart) knows nothing of the ids held here: each is claimed again (request
        // id 0: answered only if another instance took it meanwhile).
        var reclaimed = 0
        engine.registry.forEach { id, key, entry in
            let message = ClusterClaim(key: key, id: id, tokenHash: Array(SHA256.hash(data: Array(entry.token.utf8))), limit: 0)
            if let frame = try? EncodedFrame(message), transmit(frame, over: channel, essential: true) { reclaimed += 1 }
        }
        if reclaimed > 0 { logger.info("claimed \(reclaimed) local ids again in the peer directory") }
        let bound = NIOLoopBound(self, eventLoop: loop)
        FrameReader.start(channel: channel, peer: "the cluster role") { event in
            bound.eventLoop.execute { bound.value.handle(event, generation: current) }
        }
        logger.info("cluster role connected")
    }

    @discardableResult
    func attach(link: any AuthLink) -> Int {
        linkLost("the cluster role was replaced")
        generation += 1
        self.link = link
        return generation
    }

    /// Puts the claim to the directory; nil when its answer comes later (through the engine).
    func claim(_ claim: DirectoryClaim) -> ClaimAnswer? {
        guard let link else { return .unavailable }
        nextRequestID &+= 1
        if nextRequestID == 0 { nextRequestID = 1 }
        let message = ClusterClaim(
            key: claim.key, id: claim.id, tokenHash: Array(SHA256.hash(data: Array(claim.token.utf8))),
            limit: UInt32(clamping: limit))
        guard let frame = try? EncodedFrame(message, requestID: nextRequestID), transmit(frame, over: link) else {
            return .unavailable
        }
        pending[nextRequestID] = (claim.connection, claim.id, claim.key, loop.now + Self.claimTimeout)
        if timer == nil { armTimer() }
        return nil
    }

    func release(id: String, key: String) {
        guard let link, let frame = try? EncodedFrame(ClusterRelease(key: key, id: id)) else { return }
        if !transmit(frame, over: link, essential: true) { logger.warning("could not release \(id) in the peer directory; its row expires") }
    }

    func forward(_ frame: UnsafeRawBufferPointer, key: String, to id: String, from source: String, at instance: String) -> Bool {
        guard let link, engine.directoryAvailable, frame.count <= ClusterRelay.maxFrameBytes,
            let encoded = try? EncodedFrame(ClusterSend(ClusterRelay(instance: instance, key: key, id: id, source: source, frame: Array(frame))))
        else { return false }
        return transmit(encoded, over: link)
    }

    /// Sends now or queues behind earlier frames; false when neither (queue full, link failed).
    /// An `essential` frame (a release, a claim again after a restart of the role) is queued past
    /// ``maxUnsent``: each stands for an id held here, so there are never more than the registry.
    private func transmit(_ frame: EncodedFrame, over link: any AuthLink, essential: Bool = false) -> Bool {
        if unsent.isEmpty {
            do {
                try link.sendFrame(frame)
                return true
            } catch where error.code == .wouldBlock {
            } catch {
                linkLost("send failed: \(error)")
                return false
            }
        }
        guard essential || unsent.count < Self.maxUnsent else { return false }
        unsent.append(frame)
        if retry == nil { scheduleRetry() }
        return true
    }

    private func scheduleRetry() {
        let bound = NIOLoopBound(self, eventLoop: loop)
        retry = loop.scheduleTask(in: .milliseconds(1)) { bound.value.sendUnsent() }
    }

    private func sendUnsent() {
        retry = nil
        guard let link else { return }
        while let frame = unsent.first {
            do {
                try link.sendFrame(frame)
                unsent.removeFirst()
            } catch where error.code == .wouldBlock {
                scheduleRetry()
                return
            } catch {
                linkLost("send failed: \(error)")
                return
            }
        }
    }

    /// A frame or the end of the link of `generation`.
    func handle(_ event: FrameReader.Event, generation: Int) {
        guard generation == self.generation else { return }
        switch event {
        case .frame(let type, let requestID, let payload):
            do {
                try handle(type, requestID: requestID, payload: payload)
            } catch {
                linkLost("bad \(type) frame from the cluster role: \(error)")
            }
        case .closed(let why):
            linkLost(why)
        }
        connections.flush()
    }

    private func handle(_ type: FrameType, requestID: UInt32, payload: [UInt8]) throws(IPCError) {
        switch type {
        case .clusterAnswer:
            let answer = try ClusterAnswer(decoding: payload)
            guard let entry = pending.removeValue(forKey: requestID) else { return }
            let outcome: ClaimAnswer = switch answer.outcome {
            case .granted: .granted
            case .taken: .taken
            case .limit: .limit
            case .unavailable: .unavailable
            }
            answerClaim(entry.connection, outcome)
        case .clusterDeliver:
            let relay = try ClusterDeliver(decoding: payload).relay
            relay.frame.withUnsafeBytes { engine.deliver($0, key: relay.key, to: relay.id, from: relay.source) }
        case .clusterPeer:
            let change = try ClusterPeerChange(decoding: payload)
            switch change.change {
            case .registered: engine.remoteRegistered(id: change.id, key: change.key, instance: change.instance)
            case .released: engine.remoteReleased(id: change.id, key: change.key, instance: change.instance)
            case .movedElsewhere:
                logger.info("\(change.id) registered again on instance \(change.instance); closing it here")
                engine.movedElsewhere(id: change.id, key: change.key)
            case .reset: engine.forgetRemotePeers()
            case .instanceGone: engine.remoteInstanceGone(change.instance)
            }
        case .clusterState:
            let state = try ClusterState(decoding: payload)
            if state.available != engine.directoryAvailable {
                logger.notice(state.available ? "peer directory available" : "peer directory unavailable: new ids are refused, messages for other instances expire")
            }
            engine.directory(available: state.available)
        default:
            throw IPCError(.wrongDirection, "the cluster role does not send \(type)")
        }
    }

    private func answerClaim(_ connection: ConnectionID, _ answer: ClaimAnswer) {
        // A connection closed by a drain has left the table before its channel is inactive.
        guard connections.contains(connection) else {
            engine.connectionClosed(connection)
            return
        }
        _ = engine.claimed(answer, for: connection)
    }

    private func armTimer() {
        guard let first = pending.values.min(by: { $0.at < $1.at }) else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        timer = loop.scheduleTask(deadline: first.at) { bound.value.expireOverdue() }
    }

    private func expireOverdue() {
        timer = nil
        let now = loop.now
        for (requestID, entry) in pending where entry.at <= now {
            pending[requestID] = nil
            logger.warning("the peer directory did not answer the claim of \(entry.id) within \(Self.claimTimeout.nanoseconds / 1_000_000_000) s; refusing it")
            answerClaim(entry.connection, .unavailable)  // the engine releases the id (the claim may still be granted)
        }
        connections.flush()
        armTimer()
    }

    private func linkLost(_ why: String) {
        guard link != nil else { return }
        logger.error("cluster role channel lost (\(why)); new ids are refused until the supervisor restarts it")
        link = nil
        // The role sees the end of its channel, leaves the directory and exits; the supervisor
        // starts a new one, which is introduced to this broker like the first.
        if let channel { _ = Glibc.shutdown(channel.rawFD, Int32(SHUT_RDWR)) }
        channel = nil
        unsent.removeAll()
        retry?.cancel()
        retry = nil
        timer?.cancel()
        timer = nil
        engine.directory(available: false)
        engine.forgetRemotePeers()
        let open = pending
        pending = [:]
        for (_, entry) in open.sorted(by: { $0.key < $1.key }) { answerClaim(entry.connection, .unavailable) }
        connections.flush()
    }
}
