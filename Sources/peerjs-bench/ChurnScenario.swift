/// `churn`: sessions back to back, C at a time. A session is one new peer that connects, waits
/// for OPEN, sends a ~1 KiB OFFER to one of E long-lived echo peers, receives the echo's ANSWER
/// (two relayed messages), and closes (WebSocket close handshake; the server closes TCP).
/// Resident memory is sampled before and after the measured window, each time with no session
/// in flight, after a warm-up so that allocator high-water marks are already reached.
final class ChurnScenario: ScenarioBase {
    private enum Phase { case connectingEchoes, warmup, pause, measure, ending, done }

    private let echoes: Int
    private let concurrency: Int
    private let duration: Double
    private let warmup: Double
    private let maxSessions: Int
    private let warmupSessions: Int?
    private var warmedUp = 0
    private let sessionTimeout: UInt64 = 10_000_000_000
    private var phase = Phase.connectingEchoes
    private var echoPeers: [PeerConnection] = []
    private var offers: [FrameTemplate] = []
    private var echoesOpen = 0
    private var nextIndex = 0
    private var inFlight = 0
    private var startedMeasured = 0
    private var completed = 0
    private var histogram = Histogram()
    private var t0: UInt64 = 0
    private var t1: UInt64 = 0
    private var serverCPU0 = 0.0
    private var serverSystem0 = 0.0
    private var clientCPU0 = CPUTimes()
    private var sweeper: ClientLoop.Timer?

    init(loop: ClientLoop, options: ClientSettings, echoes: Int, concurrency: Int, duration: Double, warmup: Double,
         warmupSessions: Int? = nil, count: Int?) throws {
        self.warmupSessions = warmupSessions
        self.echoes = echoes
        self.concurrency = concurrency
        self.duration = duration
        self.warmup = warmup
        maxSessions = count ?? Int.max
        try super.init(name: "churn", loop: loop, options: options)
        result.parameters = ["echoes": "\(echoes)", "concurrency": "\(concurrency)", "duration": "\(duration)",
                             "warmup": warmupSessions.map { "\($0) sessions" } ?? "\(warmup)", "count": count.map { "\($0)" } ?? "unbounded",
                             "sourceAddresses": "\(options.sourceAddresses)"]
    }

    override func start() {
        for index in 0..<echoes {
            let peer = connector.makePeer(index: index, id: "\(prefix)e\(index)", events: self)
            echoPeers.append(peer)
            offers.append(Payloads.signal(type: "OFFER", dst: peer.id, connection: index))
            live[index] = peer
            connector.connect(peer)
        }
        nextIndex = echoes
        sweeper = loop.every(0.5) { [unowned self] in sweep() }
    }

    private func isEcho(_ peer: PeerConnection) -> Bool { peer.index < echoes }

    private func fill() {
        while inFlight < concurrency && (phase == .warmup || (phase == .measure && startedMeasured < maxSessions)) {
            let peer = connector.makePeer(index: nextIndex, id: "\(prefix)s\(nextIndex)", events: self)
            nextIndex += 1
            inFlight += 1
            if phase == .measure {
                startedMeasured += 1
                peer.tag = 1
            }
            live[peer.index] = peer
            connector.connect(peer)
        }
    }

    private func sweep() {
        let now = nowNanos()
        for peer in live.values where !isEcho(peer) && now - peer.startNanos > sessionTimeout {
            end(peer, failure: "session timeout")
            peer.abort()
        }
    }

    /// Ends a session once: success when the server closed it after our close frame.
    private func end(_ peer: PeerConnection, failure: String?) {
        guard peer.state != .done, peer.state != .idle else { return }
        peer.state = .done
        inFlight -= 1
        if let failure {
            fail(failure)
        } else if phase == .warmup, let warmupSessions {
            warmedUp += 1
            if warmedUp == warmupSessions { pauseThenMeasure() }
        } else if peer.tag == 1 && phase == .measure {
            completed += 1
            histogram.record(nowNanos() - peer.startNanos)
            if completed >= maxSessions { endMeasure() }
        }
        fill()
    }

    override func opened(_ peer: PeerConnection) {
        if isEcho(peer) {
            peer.state = .open
            echoesOpen += 1
            if echoesOpen == echoes { beginWarmup() }
            return
        }
        guard peer.state == .connecting else { return }
        peer.state = .open
        peer.writeAndFlush(offers[peer.index % echoes], stamp: stamp)
    }

    override func received(_ peer: PeerConnection, _ message: UnsafeRawBufferPointer) {
        if isEcho(peer) {
            guard let source = Bytes.source(in: message) else {
                fail("echo: message without src")
                return
            }
            peer.write(Payloads.answer(dst: source))
            return
        }
        guard peer.state == .open else { return }
        peer.sendClose()
    }

    override func failed(_ peer: PeerConnection, _ reason: String) {
        if isEcho(peer) {
            super.failed(peer, "echo: " + reason)
            if phase == .connectingEchoes { teardown() }
            return
        }
        if !peer.isConnected { live[peer.index] = nil }
        end(peer, failure: category(reason))
    }

    override func closed(_ peer: PeerConnection) {
        super.closed(peer)
        if isEcho(peer) {
            if phase != .done { fail("echo closed") }
            return
        }
        end(peer, failure: peer.state == .closing ? nil : "closed before ANSWER")
    }

    private func beginWarmup() {
        phase = .warmup
        fill()
        if warmupSessions == nil {
            schedule(after: warmup) { ($0 as? ChurnScenario)?.pauseThenMeasure() }
        }
    }

    private func pauseThenMeasure() {
        phase = .pause
        waitIdle { scenario in
            scenario.schedule(after: 0.5) { base in
                guard let scenario = base as? ChurnScenario else { return }
                scenario.result.serverBefore = scenario.server.sample()
                scenario.serverCPU0 = scenario.result.serverBefore?.totalCPU ?? 0
                scenario.serverSystem0 = scenario.result.serverBefore?.totalSystemCPU ?? 0
                scenario.clientCPU0 = selfCPUTimes()
                scenario.result.failures = [:]
                scenario.phase = .measure
                scenario.t0 = nowNanos()
                scenario.fill()
                scenario.schedule(after: scenario.duration) { ($0 as? ChurnScenario)?.endMeasure() }
            }
        }
    }

    private func endMeasure() {
        guard phase == .measure else { return }
        phase = .ending
        t1 = nowNanos()
        let seconds = Double(t1 - t0) / 1e9
        result.sessions = completed
        result.sessionsPerSecond = Double(completed) / seconds
        if completed > 0 {
            let used = selfCPUTimes() - clientCPU0
            result.clientCPUMicrosPerSession = used.total / Double(completed) * 1e6
            result.clientSystemMicrosPerSession = used.system / Double(completed) * 1e6
        }
        result.sessionLatency = histogram.summary()
        waitIdle { scenario in
            // Let the server finish its own cleanup of the last sessions before sampling.
            scenario.schedule(after: 1.0) { base in
                guard let scenario = base as? ChurnScenario else { return }
                let after = scenario.server.sample()
                scenario.result.serverAfter = after
                if scenario.server.root != nil {
                    scenario.result.serverCPUSeconds = after.totalCPU - scenario.serverCPU0
                    scenario.result.serverSystemCPUSeconds = after.totalSystemCPU - scenario.serverSystem0
                }
                if let before = scenario.result.serverBefore?.primary, let now = after.primary {
                    scenario.result.rssGrowthBytes = now.rssBytes - before.rssBytes
                    scenario.result.rssGrowthPercent = 100 * Double(now.rssBytes - before.rssBytes) / Double(max(1, before.rssBytes))
                    if scenario.completed > 0 {
                        scenario.result.rssGrowthPerSessionBytes = Double(now.rssBytes - before.rssBytes) / Double(scenario.completed)
                    }
                }
                scenario.phase = .done
                scenario.sweeper?.cancel()
                scenario.teardown()
            }
        }
    }

    /// Calls `body` once no session is in flight (sessions time out after 10 s, so this ends).
    private func waitIdle(_ body: @escaping (ChurnScenario) -> Void) {
        if inFlight == 0 {
            body(self)
        } else {
            schedule(after: 0.02) { ($0 as? ChurnScenario)?.waitIdle(body) }
        }
    }

    override func timedOut() {
        sweeper?.cancel()
        if phase == .measure || phase == .pause || phase == .warmup {
            result.sessions = completed
            let seconds = Double(nowNanos() - (t0 == 0 ? nowNanos() : t0)) / 1e9
            result.sessionsPerSecond = seconds > 0 ? Double(completed) / seconds : 0
            result.sessionLatency = histogram.summary()
        }
        phase = .done
        super.timedOut()
    }
}
