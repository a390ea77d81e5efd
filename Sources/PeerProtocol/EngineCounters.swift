/// What the engine has done since it started, for the metrics endpoint (`--metrics-port`):
/// plain integers bumped on the loop that owns the engine, read when the broker exports them.
public struct EngineCounters: Sendable, Equatable {
    /// Messages accepted for relay (delivered, forwarded, or queued for an offline id), by type.
    public var offers = 0, answers = 0, candidates = 0, leaves = 0, expires = 0
    /// `EXPIRE`s sent to senders whose messages for an offline id were dropped (expired in the
    /// queue, or the queue was full).
    public var expiredMessages = 0
    /// Registrations refused at `concurrent_limit`.
    public var concurrentLimitHits = 0
    /// Takeovers (`--takeover-timeout`): the silent holder was closed, or the holder answered
    /// and the claimant got `ID-TAKEN`.
    public var takenOver = 0, takeoverRefused = 0
    /// The policy's answers to registrations still waiting for them (failed: no helper, a lost
    /// or full channel, or a query it cannot be asked).
    public var authAllow = 0, authDeny = 0, authTimeout = 0, authFailed = 0

    public init() {}

    mutating func count(_ answer: AuthorizationAnswer) {
        switch answer {
        case .allow: authAllow += 1
        case .deny: authDeny += 1
        case .timedOut: authTimeout += 1
        case .failed, .unaskable: authFailed += 1
        }
    }

    mutating func relayed(_ type: MessageType) {
        switch type {
        case .offer: offers += 1
        case .answer: answers += 1
        case .candidate: candidates += 1
        case .leave: leaves += 1
        case .expire: expires += 1
        default: break
        }
    }
}
