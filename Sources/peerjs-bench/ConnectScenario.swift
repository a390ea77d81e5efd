/// `connect`: N peers register with at most C handshakes in flight; then they are held open
/// for a while and the server's resident memory is compared with the one before.
final class ConnectScenario: ScenarioBase {
    private let count: Int
    private let concurrency: Int
    private let hold: Double
    private let handshakeTimeout: UInt64 = 10_000_000_000
    private var started = 0
    private var inFlight = 0
    private var opened = 0
    private var dropped = 0
    private var holding = false
    private var histogram = Histogram()
    private var firstStart: UInt64 = 0
    private var lastDone: UInt64 = 0
    private var sweeper: ClientLoop.Timer?
    /// Every peer with its request (and JWT) built before the clock starts.
    private var prepared: [PeerConnection] = []

    init(loop: ClientLoop, options: ClientSettings, count: Int, concurrency: Int, hold: Double) throws {
        self.count = count
        self.concurrency = concurrency
        self.hold = hold
        try super.init(name: "connect", loop: loop, options: options)
        result.parameters = ["count": "\(count)", "concurrency": "\(concurrency)", "hold": "\(hold)",
                             "sourceAddresses": "\(options.sourceAddresses)"]
        result.peers = count
    }

    private var clientCPU0 = CPUTimes()

    override func start() {
        prepared = (0..<count).map { connector.makePeer(index: $0, id: "\(prefix)c\($0)", events: self) }
        result.serverBefore = server.sample()
        clientCPU0 = selfCPUTimes()
        firstStart = nowNanos()
        sweeper = loop.every(0.5) { [unowned self] in sweep() }
        fill()
    }

    private func fill() {
        while inFlight < concurrency && started < count {
            let peer = prepared[started]
            started += 1
            inFlight += 1
            live[peer.index] = peer
            connector.connect(peer)
        }
        if inFlight == 0 && started == count && !holding { connected() }
    }

    /// Fails handshakes that take longer than 10 s.
    private func sweep() {
        let now = nowNanos()
        for peer in live.values where peer.state == .connecting && now - peer.startNanos > handshakeTimeout {
            peer.fail("handshake timeout")
            peer.abort()
        }
    }

    override func opened(_ peer: PeerConnection) {
        guard peer.state == .connecting else { return }
        peer.state = .open
        let now = nowNanos()
        histogram.record(now - peer.startNanos)
        opened += 1
        inFlight -= 1
        lastDone = now
        fill()
    }

    override func failed(_ peer: PeerConnection, _ reason: String) {
        super.failed(peer, reason)
        guard peer.state == .connecting else { return }
        peer.state = .done
        inFlight -= 1
        lastDone = nowNanos()
        fill()
    }

    override func closed(_ peer: PeerConnection) {
        super.closed(peer)
        if peer.state == .open { dropped += 1 }
        peer.state = .done
    }

    private func summarize() {
        let elapsed = Double((lastDone > firstStart ? lastDone : nowNanos()) - firstStart) / 1e9
        result.connected = opened
        result.connectionsPerSecond = elapsed > 0 ? Double(opened) / elapsed : 0
        result.openLatency = histogram.summary()
        result.parameters["connectSeconds"] = fmt(elapsed)
        if opened > 0 {
            let used = selfCPUTimes() - clientCPU0
            result.clientCPUMicrosPerConnection = used.total / Double(opened) * 1e6
            result.clientSystemMicrosPerConnection = used.system / Double(opened) * 1e6
        }
    }

    private func connected() {
        holding = true
        sweeper?.cancel()
        summarize()
        schedule(after: hold) { base in
            guard let scenario = base as? ConnectScenario else { return }
            scenario.measureHeld()
        }
    }

    private func measureHeld() {
        let held = server.sample()
        result.serverHeld = held
        result.droppedWhileHeld = dropped
        if opened > 0, let before = result.serverBefore?.primary, let after = held.primary {
            result.rssPerPeerBytes = Double(after.rssBytes - before.rssBytes) / Double(opened)
            result.anonPerPeerBytes = Double(after.anonBytes - before.anonBytes) / Double(opened)
            // CPU of all server processes (broker + supervisor for ours) per connection made.
            result.serverCPUMicrosPerConnection = (held.totalCPU - (result.serverBefore?.totalCPU ?? 0)) / Double(opened) * 1e6
            result.serverSystemMicrosPerConnection =
                (held.totalSystemCPU - (result.serverBefore?.totalSystemCPU ?? 0)) / Double(opened) * 1e6
        }
        teardown()
    }

    override func timedOut() {
        sweeper?.cancel()
        if !holding { summarize() }
        super.timedOut()
    }
}
