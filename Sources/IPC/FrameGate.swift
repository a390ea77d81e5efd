/// The one place a receiving role checks that a frame may come *now*: it holds the phase of one
/// channel for the role at its local end, and ``accept(_:)`` refuses a frame that
/// travels the wrong way, comes out of phase (an ``FramePhase/afterOpening`` frame before the
/// opening frame, a second opening frame) or answers a question nobody asked. Each role's receive
/// loop calls it once per received frame, before it dispatches on the type, so no loop has to
/// remember the order itself.
///
/// Questions are counted: the receiving role calls ``asked(_:)`` for every question it sends on
/// this channel (a `tlsChunk` generation is one question, asked with its last chunk), and then
/// exactly one answer per question is accepted. A late answer (the asker gave up waiting) is still
/// accepted: the count is of questions sent, not of questions still waited for.
///
/// Per channel, not per process: a restarted peer comes with a fresh channel and a fresh gate.
/// - Parameters:
///   - roles: the role holding this end (the receiver) and the role at the other end.
///   - isOpen: whether the opening frame of the incoming direction has arrived.
public struct FrameGate: Sendable {
    public let roles: ChannelRoles
    public private(set) var isOpen = false
    /// Answers accepted from now on, by answer type.
    private var unanswered: [FrameType: Int] = [:]

    public init(local: Role, remote: Role) {
        roles = ChannelRoles(local: local, remote: remote)
    }

    /// Checks a received frame; see ``accept(_:)``.
    public mutating func accept(_ frame: borrowing ReceivedFrame) throws(IPCError) {
        try accept(frame.type)
    }

    /// Lets a frame of `type` through, or throws a violation (``IPCError/isViolation``: close the
    /// channel): ``IPCError/Code/wrongDirection``, ``IPCError/Code/outOfPhase`` or
    /// ``IPCError/Code/unsolicitedAnswer``. A refused frame changes nothing.
    public mutating func accept(_ type: FrameType) throws(IPCError) {
        guard type.sender == roles.remote, type.receiver == roles.local else {
            throw IPCError(.wrongDirection, "\(type.name) frames go \(type.sender.rawValue) → \(type.receiver.rawValue), this one came \(roles.remote.rawValue) → \(roles.local.rawValue); the peer is broken or compromised, close the channel")
        }
        switch type.phase {
        case .opening where isOpen:
            throw IPCError(.outOfPhase, "a second \(type.name) from the \(roles.remote.rawValue); it comes once per channel, the peer is broken, close the channel")
        case .afterOpening where !isOpen:
            throw IPCError(.outOfPhase, "\(type.name) from the \(roles.remote.rawValue) before the channel's opening frame; the peer is broken, close the channel")
        default:
            break
        }
        if let question = type.question {
            guard let waiting = unanswered[type], waiting > 0 else {
                throw IPCError(.unsolicitedAnswer, "\(type.name) from the \(roles.remote.rawValue) answers no \(question.name) sent on this channel; the peer is broken or compromised, close the channel")
            }
            unanswered[type] = waiting - 1
        }
        if type.phase == .opening { isOpen = true }
    }

    /// Records that this end sent one `question` (a type with an ``FrameType/answer``), so one
    /// answer to it is accepted. A type that has no answer is ignored.
    public mutating func asked(_ question: FrameType) {
        guard let answer = question.answer else { return }
        unanswered[answer, default: 0] += 1
    }
}
