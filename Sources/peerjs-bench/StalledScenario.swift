/// `stalled`: two registered peers bounce a ~1 KiB OFFER back and forth (B returns each one at
/// once, with A's timestamp; A sends the next `--interval` later) while N raw connections that
/// send part of a request and then nothing — a POST promising a body, half a header line, an
/// upgrade whose headers never end — are opened at `--stalled-rate` and held. Round-trip times
/// are reported for three windows: before the flood (baseline), while it is being opened, and
/// while it is held. A server may answer the POST at once (ours: 413, no route takes a body);
/// the client then closes it, and it is counted as answered. With `--refill`, each stalled
/// connection that ends is replaced at once, so the server is flooded for the whole held window.
final class StalledScenario: ScenarioBase {
    private enum Phase { case connecting, baseline, flood, held, done }

    private let stalledCount: Int
    private let rate: Double
    private let duration: Double
    private let interval: Double
    private let refill: Bool
    private let prefixes: [[UInt8]]
    private var phase = Phase.connecting
    private var a: PeerConnection!
    private var b: PeerConnection!
    private var toB: FrameTemplate!
    private var toA: FrameTemplate!
    private var histograms: [Phase: Histogram] = [.baseline: Histogram(), .flood: Histogram(), .held: Histogram()]
    private var stalledPeers: [Int: PeerConnection] = [:]
    private var launched = 0
    private var nextIndex = 2
    private var closedByServer = 0
    private var answered = 0
    private var connectFailures = 0
    private var floodStart: UInt64 = 0
    private var ticker: ClientLoop.Timer?
    private var watchdog: ClientLoop.Timer?
    /// When A's OFFER in flight was sent (0: none in flight).
    private var sentAt: UInt64 = 0
    private var errors: [String: Int] = [:]

    init(loop: ClientLoop, options: ClientSettings, stalled: Int, rate: Double, duration: Double, interval: Double,
         refill: Bool) throws {
        stalledCount = stalled
        self.rate = rate
        self.duration = duration
        self.interval = interval
        self.refill = refill
        let path = options.path.hasSuffix("/") ? options.path : options.path + "/"
        prefixes = [
            "POST \(path)\(options.key)/id HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
            "GET \(path)\(options.key)/id HTTP/1.1\r\nHost: x\r\nX-Half: ab",
            "GET \(path)peerjs?key=\(options.key)&id=s&token=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        ].map { Array($0.utf8) }
        try super.init(name: "stalled", loop: loop, options: options)
        result.parameters = ["stalled": "\(stalled)", "stalledRate": "\(rate)", "duration": "\(duration)",
                             "interval": "\(interval)", "refill": "\(refill)", "sourceAddresses": "\(options.sourceAddresses)"]
    }

    override func start() {
        a = connector.makePeer(index: 0, id: "\(prefix)a", events: self)
        b = connector.makePeer(index: 1, id: "\(prefix)b", events: self)
        toB = Payloads.signal(type: "OFFER", dst: b.id, connection: 0)
        toA = Payloads.signal(type: "OFFER", dst: a.id, connection: 0)
        for peer in [a!, b!] {
            live[peer.index] = peer
            connector.connect(peer)
        }
    }

    override func opened(_ peer: PeerConnection) {
        peer.state = .open
        guard a.state == .open, b.state == .open, phase == .connecting else { return }
        phase = .baseline
        sendOffer()
        // A lost OFFER (or its return) is counted and the ping-pong goes on.
        watchdog = loop.every(0.5) { [unowned self] in
            if sentAt != 0, nowNanos() &- sentAt > 5_000_000_000 {
                errors["no return within 5 s", default: 0] += 1
                sendOffer()
            }
        }
        schedule(after: duration) { ($0 as? StalledScenario)?.startFlood() }
    }

    private func sendOffer() {
        guard phase != .done, a.state == .open else { return }
        sentAt = nowNanos()
        a.writeAndFlush(toB, stamp: stamp)
    }

    override func received(_ peer: PeerConnection, _ message: UnsafeRawBufferPointer) {
        guard let sent = Bytes.timestamp(in: message) else {
            let kind = ["\"LEAVE\"", "\"EXPIRE\"", "\"ERROR\""].first { Bytes.find(Array($0.utf8), in: message) != nil }
            errors[kind.map { String($0.dropFirst().dropLast()) } ?? "unparsed", default: 0] += 1
            return
        }
        if peer === b {
            b.writeAndFlush(toA, stamp: sent)  // back at once, with A's send time
            return
        }
        let now = stamp
        histograms[phase]?.record(now > sent ? now - sent : 0)
        sentAt = 0
        schedule(after: interval / 1000) { ($0 as? StalledScenario)?.sendOffer() }
    }

    // MARK: The stalled connections

    private func startFlood() {
        phase = .flood
        floodStart = nowNanos()
        ticker = loop.every(0.001) { [unowned self] in
            let due = min(stalledCount, Int(Double(nowNanos() &- floodStart) / 1e9 * rate) + 1)
            while launched < due {
                launched += 1
                openStalled()
            }
            if launched == stalledCount {
                ticker?.cancel()
                result.floodSeconds = Double(nowNanos() &- floodStart) / 1e9
                phase = .held
                schedule(after: duration) { ($0 as? StalledScenario)?.end() }
            }
        }
    }

    private func openStalled() {
        let index = nextIndex
        nextIndex += 1
        let peer = PeerConnection(index: index, id: "", request: prefixes[index % prefixes.count], loop: loop, events: self)
        stalledPeers[index] = peer
        connector.connect(peer)
    }

    /// A stalled connection ended: never established, or closed by the server (evicted, refused,
    /// timed out). The two signalling peers fail for real.
    override func failed(_ peer: PeerConnection, _ reason: String) {
        guard stalledPeers.removeValue(forKey: peer.index) != nil else {
            super.failed(peer, reason)
            return
        }
        if reason.hasPrefix("connect:") {
            connectFailures += 1
        } else if reason.hasPrefix("upgrade refused") {
            answered += 1  // e.g. 413 to the POST announcing a body; the client then closes
        } else {
            closedByServer += 1
        }
        if refill && (phase == .flood || phase == .held) { openStalled() }
    }

    override func closed(_ peer: PeerConnection) {
        guard peer.index < 2 else { return }
        super.closed(peer)
        if phase != .done { errors["closed", default: 0] += 1 }
    }

    private func end() {
        phase = .done
        watchdog?.cancel()
        result.stalledHeld = stalledPeers.count
        result.stalledClosedByServer = closedByServer
        result.stalledAnswered = answered
        result.stalledConnectFailures = connectFailures
        result.baselineLatency = histograms[.baseline]?.summary()
        result.floodLatency = histograms[.flood]?.summary()
        result.heldLatency = histograms[.held]?.summary()
        result.errors = errors
        for peer in stalledPeers.values { peer.abort() }
        stalledPeers = [:]
        teardown()
    }

    override func timedOut() {
        ticker?.cancel()
        watchdog?.cancel()
        for peer in stalledPeers.values { peer.abort() }
        stalledPeers = [:]
        super.timedOut()
    }
}
