/// `relay`: P pairs ping-pong OFFER/ANSWER messages of ~1 KiB through the server, W messages
/// in flight per pair; each arrival is answered at once (or, with `--rate`, when a token
/// bucket allows). One-way latency = arrival − the `"ts"` the sender stamped.
final class RelayScenario: ScenarioBase {
    private enum Phase { case connecting, warmup, measure, drain }

    private let pairs: Int
    private let inflight: Int
    private let duration: Double
    private let warmup: Double
    private let rate: Double
    private let concurrency: Int
    private var phase = Phase.connecting
    private var peers: [PeerConnection] = []
    private var templates: [FrameTemplate] = []
    private var started = 0
    private var connecting = 0
    private var histogram = Histogram()
    private var received: UInt64 = 0
    private var errors: [String: Int] = [:]
    private var serverCPU0 = 0.0
    private var clientCPU0 = 0.0
    private var t0: UInt64 = 0
    // --rate: a token bucket refilled every millisecond.
    private var ready: [Int] = []
    private var readyHead = 0
    private var budget = 0.0
    private var lastTick: UInt64 = 0
    private var ticker: ClientLoop.Timer?

    init(loop: ClientLoop, options: ClientSettings, pairs: Int, inflight: Int, duration: Double, warmup: Double,
         rate: Double, concurrency: Int) throws {
        self.pairs = pairs
        self.inflight = inflight
        self.duration = duration
        self.warmup = warmup
        self.rate = rate
        self.concurrency = concurrency
        try super.init(name: rate > 0 ? "relay-paced" : "relay", loop: loop, options: options)
        result.parameters = ["pairs": "\(pairs)", "inflight": "\(inflight)", "duration": "\(duration)",
                             "warmup": "\(warmup)", "rate": rate > 0 ? "\(rate)" : "max",
                             "payloadBytes": "\(Payloads.signal(type: "OFFER", dst: "x", connection: 0).bytes.count)"]
        result.pairs = pairs
    }

    override func start() {
        for index in 0..<(2 * pairs) {
            let peer = connector.makePeer(index: index, id: "\(prefix)r\(index)", events: self)
            peers.append(peer)
        }
        for index in 0..<(2 * pairs) {
            let partner = peers[index ^ 1].id
            templates.append(Payloads.signal(type: index & 1 == 0 ? "OFFER" : "ANSWER", dst: partner, connection: index >> 1))
        }
        fill()
    }

    private func fill() {
        while connecting < concurrency && started < peers.count {
            let peer = peers[started]
            started += 1
            connecting += 1
            live[peer.index] = peer
            connector.connect(peer)
        }
        if connecting == 0 && started == peers.count && phase == .connecting { begin() }
    }

    override func opened(_ peer: PeerConnection) {
        guard peer.state == .connecting else { return }
        peer.state = .open
        connecting -= 1
        fill()
    }

    override func failed(_ peer: PeerConnection, _ reason: String) {
        super.failed(peer, reason)
        guard peer.state == .connecting else { return }
        peer.state = .done
        connecting -= 1
        fill()
    }

    override func closed(_ peer: PeerConnection) {
        super.closed(peer)
        if peer.state == .open && (phase == .warmup || phase == .measure) { errors["closed", default: 0] += 1 }
        peer.state = .done
    }

    private func begin() {
        phase = .warmup
        if rate > 0 {
            lastTick = nowNanos()
            ticker = loop.every(0.001) { [unowned self] in tick() }
        }
        var active = 0
        for pair in 0..<pairs where peers[2 * pair].state == .open && peers[2 * pair + 1].state == .open {
            active += 1
            for _ in 0..<inflight { send(from: peers[2 * pair], flush: true) }
        }
        result.parameters["activePairs"] = "\(active)"
        schedule(after: warmup) { ($0 as? RelayScenario)?.beginMeasure() }
    }

    private func beginMeasure() {
        histogram.reset()
        received = 0
        errors = [:]
        serverCPU0 = server.sample().totalCPU
        clientCPU0 = selfCPUSeconds()
        t0 = nowNanos()
        phase = .measure
        schedule(after: duration) { ($0 as? RelayScenario)?.endMeasure() }
    }

    private func endMeasure() {
        let seconds = Double(nowNanos() - t0) / 1e9
        let serverCPU = server.sample().totalCPU - serverCPU0
        let clientCPU = selfCPUSeconds() - clientCPU0
        phase = .drain
        ticker?.cancel()
        ready.removeAll()
        readyHead = 0
        result.messages = received
        result.messagesPerSecond = Double(received) / seconds
        result.latency = histogram.summary()
        result.errors = errors
        result.clientCPUShare = clientCPU / seconds
        if server.root != nil {
            result.serverCPUSeconds = serverCPU
            result.serverCPUShare = serverCPU / seconds
            result.serverCPUSecondsPerMillion = received > 0 ? serverCPU / (Double(received) / 1e6) : nil
        }
        schedule(after: 0.3) { $0.teardown() }
    }

    @inline(__always)
    private func send(from peer: PeerConnection, flush: Bool) {
        if rate > 0 {
            ready.append(peer.index)
            return
        }
        if flush {
            peer.writeAndFlush(templates[peer.index], stamp: stamp)
        } else {
            peer.write(templates[peer.index], stamp: stamp)
        }
    }

    private func tick() {
        let now = nowNanos()
        budget = min(budget + rate * Double(now - lastTick) / 1e9, max(1, rate / 100))
        lastTick = now
        while budget >= 1 && readyHead < ready.count {
            let peer = peers[ready[readyHead]]
            readyHead += 1
            budget -= 1
            peer.writeAndFlush(templates[peer.index], stamp: stamp)
        }
        if readyHead > 4096 && readyHead * 2 > ready.count {
            ready.removeFirst(readyHead)
            readyHead = 0
        }
    }

    override func received(_ peer: PeerConnection, _ message: UnsafeRawBufferPointer) {
        guard let sent = Bytes.timestamp(in: message) else {
            let kind = ["\"LEAVE\"", "\"EXPIRE\"", "\"ERROR\""].first { Bytes.find(Array($0.utf8), in: message) != nil }
            errors[kind.map { String($0.dropFirst().dropLast()) } ?? "unparsed", default: 0] += 1
            return
        }
        switch phase {
        case .measure:
            let now = stamp
            histogram.record(now > sent ? now - sent : 0)
            received += 1
            send(from: peer, flush: false)
        case .warmup:
            send(from: peer, flush: false)
        case .connecting, .drain:
            break
        }
    }

    override func timedOut() {
        ticker?.cancel()
        super.timedOut()
    }
}
