import Glibc

/// The one error type of the IPC module, so a caller can tell a protocol violation by a peer
/// (close the channel, restart or exit) from a full socket (retry later) from a system failure.
///
/// Two errors are equal when their codes are equal; the message is for logs and says what went
/// wrong and what to do about it.
/// - Parameters:
///   - code: what kind of failure this is; compare it with the static members of ``Code``.
///   - message: a human-readable explanation for logs.
public struct IPCError: Error, Equatable, CustomStringConvertible, Sendable {
    /// An opaque error kind, so new kinds can be added without breaking exhaustive switches.
    public struct Code: Hashable, CustomStringConvertible, Sendable {
        private enum Base: Hashable, Sendable {
            case truncated, oversize, unknownType, badVersion, badFlags, badReserved
            case fdMismatch, wrongDirection, outOfPhase, unsolicitedAnswer, malformedPayload, wouldBlock, invalidArgument
            case system(Int32)
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A record or payload ended before its declared length (or the kernel cut it).
        public static let truncated = Code(.truncated)
        /// A record, payload or field is larger than its cap.
        public static let oversize = Code(.oversize)
        /// The frame type is not in the ``FrameType`` table.
        public static let unknownType = Code(.unknownType)
        /// The header's version byte is not ``FrameHeader/currentVersion``.
        public static let badVersion = Code(.badVersion)
        /// A header flag bit other than HAS_FD is set.
        public static let badFlags = Code(.badFlags)
        /// The header's reserved word is not zero.
        public static let badReserved = Code(.badReserved)
        /// HAS_FD, the descriptor that arrived and the frame type's table entry disagree.
        public static let fdMismatch = Code(.fdMismatch)
        /// The frame type may not travel from this sender to this receiver.
        public static let wrongDirection = Code(.wrongDirection)
        /// The frame may not come now (see ``FramePhase``): before its channel's opening frame,
        /// or a second opening frame.
        public static let outOfPhase = Code(.outOfPhase)
        /// The frame answers a question that was not sent on this channel (see ``FrameGate``).
        public static let unsolicitedAnswer = Code(.unsolicitedAnswer)
        /// The payload does not decode (bad bool, invalid UTF-8, trailing bytes, bad address…).
        public static let malformedPayload = Code(.malformedPayload)
        /// The non-blocking socket is full (send) or empty (receive): retry when poll(2) says so.
        public static let wouldBlock = Code(.wouldBlock)
        /// The caller passed something unusable (a bad fd map, a negative descriptor…).
        public static let invalidArgument = Code(.invalidArgument)
        /// A system call failed with this errno value.
        public static func system(_ errno: Int32) -> Code { Code(.system(errno)) }

        /// The errno value when this is a ``system(_:)`` code.
        public var errno: Int32? {
            if case .system(let e) = base { return e }
            return nil
        }

        public var description: String {
            switch base {
            case .truncated: "truncated"
            case .oversize: "oversize"
            case .unknownType: "unknownType"
            case .badVersion: "badVersion"
            case .badFlags: "badFlags"
            case .badReserved: "badReserved"
            case .fdMismatch: "fdMismatch"
            case .wrongDirection: "wrongDirection"
            case .outOfPhase: "outOfPhase"
            case .unsolicitedAnswer: "unsolicitedAnswer"
            case .malformedPayload: "malformedPayload"
            case .wouldBlock: "wouldBlock"
            case .invalidArgument: "invalidArgument"
            case .system(let e): "system(\(e))"
            }
        }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// True when the peer broke the frame format or the frame table: the channel cannot be
    /// trusted any more (close it; restart the child, or exit if the peer is the supervisor).
    public var isViolation: Bool {
        switch code {
        case .wouldBlock, .invalidArgument: false
        default: code.errno == nil
        }
    }

    public var description: String { "IPCError.\(code): \(message)" }

    public static func == (lhs: IPCError, rhs: IPCError) -> Bool { lhs.code == rhs.code }

    /// An error for a failed system call, reading the current `errno`.
    static func system(_ call: String, errno value: Int32 = Glibc.errno) -> IPCError {
        IPCError(.system(value), "\(call) failed: \(String(cString: strerror(value))) (errno \(value))")
    }
}
