/// The processes that talk over IPC channels, so every frame type can name who may send it and
/// who may receive it, and a receiver can refuse frames that travel the wrong way.
public enum Role: String, CaseIterable, Sendable {
    case supervisor
    case broker
    case auth
    /// The only process that talks to PostgreSQL (`--cluster`): the peer directory and the
    /// relay between instances.
    case cluster
}

/// When in a channel's life a frame type may arrive, so a receiver's ``FrameGate`` can refuse a
/// frame out of order instead of each role's loop remembering it.
public enum FramePhase: Sendable {
    /// Exactly once on its channel, and it opens its direction: `hello` (the broker's settings)
    /// and `ready` (the broker is confined). A second one is refused.
    case opening
    /// Only after the opening frame of its direction (hand-offs before `hello`, credit before
    /// `ready`: refused).
    case afterOpening
    /// At any time, before the opening frame too: the setup material that comes before `hello`
    /// (TLS chunks, the auth channel), their answers, and the traffic of the channel that has no
    /// opening frame (broker↔auth helper).
    case anyTime
}

/// The row of the frame table that describes one ``FrameType``: it is looked up on every send
/// and every receive, so direction, descriptor passing, size caps, phase and answer live in one
/// place.
/// - Parameters:
///   - name: the name used in logs.
///   - sender: the only role that may send this type.
///   - receiver: the only role that may receive this type.
///   - carriesFD: whether exactly one descriptor travels with every frame of this type (and
///     never with any other type).
///   - maxPayload: the largest payload in bytes (at most ``FrameType/maxPayloadCap``).
///   - phase: when in the channel's life it may arrive.
///   - answer: the frame type that answers it (travelling the other way), nil when none does.
///     A `tlsChunk` generation is answered once, after its last chunk.
public struct FrameSpec: Equatable, Sendable {
    public let name: String
    public let sender: Role
    public let receiver: Role
    public let carriesFD: Bool
    public let maxPayload: Int
    public let phase: FramePhase
    public let answer: FrameType?
}

/// THE table of IPC frame types: every type any channel may carry, with its direction, whether
/// it carries a descriptor, its payload cap, when it may arrive and what answers it. Adding a
/// type means adding one case, one line in ``spec`` and its message type (``IPCMessage``);
/// nothing else in the module knows the list.
public enum FrameType: UInt16, CaseIterable, Sendable {
    // supervisor <-> broker
    case hello = 1
    case ready = 2
    case connection = 3
    case drain = 4
    // 5 was `stats` (never sent; removed in issue 17): retired, see ``retiredRawValues``.
    case reload = 6
    /// A fresh broker end of the broker↔auth-helper socketpair (at start and after a helper restart).
    case authChannel = 7
    /// broker -> supervisor: room for this many more connections (the descriptor budget, see
    /// ``AdmissionCredit``); the supervisor hands over no connection it holds no credit for.
    case credit = 8
    // broker <-> auth helper (payloads: AuthQuery, AuthVerdict, PeerEventMessage)
    case authQuery = 16
    case authVerdict = 17
    case peerEvent = 18
    /// supervisor -> auth helper: SIGHUP, re-read the policy files (empty payload).
    case authReload = 19
    // supervisor -> broker, TLS certificate chain / key in numbered chunks (see TLSChunk)
    case tlsChunk = 32
    /// broker -> supervisor: one generation of TLS material taken or refused (see ``TLSAck``).
    case tlsAck = 33
    /// supervisor -> auth helper, first: its settings (``AuthHelperSettings``); declared last so
    /// the fuzz seeds' selectors (by declaration order) keep their meaning.
    case authHello = 20
    // The cluster role (issue 18), declared after authHello for the same reason.
    /// supervisor -> broker: a fresh broker end of the broker↔cluster-role socketpair.
    case clusterChannel = 9
    /// supervisor -> cluster role, first: its settings (``ClusterSettings``).
    case clusterHello = 40
    /// broker -> cluster role: claim an id in the peer directory (``ClusterClaim``).
    case clusterClaim = 41
    /// cluster role -> broker: the directory's answer (``ClusterAnswer``).
    case clusterAnswer = 42
    /// broker -> cluster role: an id this instance no longer holds (``ClusterRelease``).
    case clusterRelease = 43
    /// broker -> cluster role: a frame for a peer on another instance (``ClusterSend``).
    case clusterSend = 44
    /// cluster role -> broker: a frame from another instance for a local peer (``ClusterDeliver``).
    case clusterDeliver = 45
    /// cluster role -> broker: a change in the directory (``ClusterPeerChange``).
    case clusterPeer = 46
    /// cluster role -> broker: the directory answers, or not (``ClusterState``).
    case clusterState = 47
    /// broker -> supervisor: its metrics in the Prometheus text format (``MetricsText``), every
    /// `metricsIntervalMs` (issue 19); declared last so the fuzz seeds' selectors keep their meaning.
    case metrics = 11

    /// Numbers once used by a type that is gone, never to be given to a new one: a peer of an
    /// older build would read that frame as the old type. 5: `stats` (never sent).
    public static let retiredRawValues: Set<UInt16> = [5]

    /// No frame type may declare a payload cap above this (64 KiB).
    public static let maxPayloadCap = 64 * 1024

    /// This type's row of the table.
    public var spec: FrameSpec {
        switch self {
        //                           name                 sender               receiver               fd                max payload            phase                 answer
        case .hello:       FrameSpec(name: "hello",       sender: .supervisor, receiver: .broker,     carriesFD: false, maxPayload: 32 * 1024, phase: .opening,      answer: .ready)
        case .ready:       FrameSpec(name: "ready",       sender: .broker,     receiver: .supervisor, carriesFD: false, maxPayload: 0,         phase: .opening,      answer: nil)
        case .connection:  FrameSpec(name: "connection",  sender: .supervisor, receiver: .broker,     carriesFD: true,  maxPayload: 512,       phase: .afterOpening, answer: nil)
        case .drain:       FrameSpec(name: "drain",       sender: .supervisor, receiver: .broker,     carriesFD: false, maxPayload: 16,        phase: .afterOpening, answer: nil)
        case .reload:      FrameSpec(name: "reload",      sender: .supervisor, receiver: .broker,     carriesFD: false, maxPayload: 32 * 1024, phase: .afterOpening, answer: nil)
        case .authChannel: FrameSpec(name: "authChannel", sender: .supervisor, receiver: .broker,     carriesFD: true,  maxPayload: 0,         phase: .anyTime,      answer: nil)
        case .credit:      FrameSpec(name: "credit",      sender: .broker,     receiver: .supervisor, carriesFD: false, maxPayload: 4,         phase: .afterOpening, answer: nil)
        case .authQuery:   FrameSpec(name: "authQuery",   sender: .broker,     receiver: .auth,       carriesFD: false, maxPayload: 6 * 1024,  phase: .anyTime,      answer: .authVerdict)
        case .authVerdict: FrameSpec(name: "authVerdict", sender: .auth,       receiver: .broker,     carriesFD: false, maxPayload: 512,       phase: .anyTime,      answer: nil)
        case .peerEvent:   FrameSpec(name: "peerEvent",   sender: .broker,     receiver: .auth,       carriesFD: false, maxPayload: 1024,      phase: .anyTime,      answer: nil)
        case .authReload:  FrameSpec(name: "authReload",  sender: .supervisor, receiver: .auth,       carriesFD: false, maxPayload: 0,         phase: .afterOpening, answer: nil)
        case .tlsChunk:    FrameSpec(name: "tlsChunk",    sender: .supervisor, receiver: .broker,     carriesFD: false, maxPayload: 16 * 1024, phase: .anyTime,      answer: .tlsAck)
        case .tlsAck:      FrameSpec(name: "tlsAck",      sender: .broker,     receiver: .supervisor, carriesFD: false, maxPayload: 1024,      phase: .anyTime,      answer: nil)
        case .authHello:   FrameSpec(name: "authHello",   sender: .supervisor, receiver: .auth,       carriesFD: false, maxPayload: 8 * 1024,  phase: .opening,      answer: nil)
        case .clusterChannel: FrameSpec(name: "clusterChannel", sender: .supervisor, receiver: .broker, carriesFD: true, maxPayload: 0,        phase: .anyTime,      answer: nil)
        case .clusterHello:   FrameSpec(name: "clusterHello",   sender: .supervisor, receiver: .cluster, carriesFD: false, maxPayload: 4 * 1024, phase: .opening,     answer: nil)
        case .clusterClaim:   FrameSpec(name: "clusterClaim",   sender: .broker,  receiver: .cluster,    carriesFD: false, maxPayload: 1024,      phase: .anyTime,      answer: .clusterAnswer)
        case .clusterAnswer:  FrameSpec(name: "clusterAnswer",  sender: .cluster, receiver: .broker,     carriesFD: false, maxPayload: 1,         phase: .anyTime,      answer: nil)
        case .clusterRelease: FrameSpec(name: "clusterRelease", sender: .broker,  receiver: .cluster,    carriesFD: false, maxPayload: 1024,      phase: .anyTime,      answer: nil)
        case .clusterSend:    FrameSpec(name: "clusterSend",    sender: .broker,  receiver: .cluster,    carriesFD: false, maxPayload: Self.maxPayloadCap, phase: .anyTime,  answer: nil)
        case .clusterDeliver: FrameSpec(name: "clusterDeliver", sender: .cluster, receiver: .broker,     carriesFD: false, maxPayload: Self.maxPayloadCap, phase: .anyTime,  answer: nil)
        case .clusterPeer:    FrameSpec(name: "clusterPeer",    sender: .cluster, receiver: .broker,     carriesFD: false, maxPayload: 1024,      phase: .anyTime,      answer: nil)
        case .clusterState:   FrameSpec(name: "clusterState",   sender: .cluster, receiver: .broker,     carriesFD: false, maxPayload: 1,         phase: .anyTime,      answer: nil)
        case .metrics:        FrameSpec(name: "metrics",        sender: .broker,  receiver: .supervisor, carriesFD: false, maxPayload: 12 + MetricsText.maxLength, phase: .afterOpening, answer: nil)
        }
    }

    public var name: String { spec.name }
    public var sender: Role { spec.sender }
    public var receiver: Role { spec.receiver }
    public var carriesFD: Bool { spec.carriesFD }
    public var maxPayload: Int { spec.maxPayload }
    public var phase: FramePhase { spec.phase }
    public var answer: FrameType? { spec.answer }

    /// The question this type answers (the type whose ``answer`` it is), nil when it answers none.
    public var question: FrameType? { Self.questions[self] }

    private static let questions: [FrameType: FrameType] = Dictionary(
        uniqueKeysWithValues: allCases.compactMap { question in question.answer.map { ($0, question) } })

    /// Whether frames of this type carry private-key bytes: their records and payloads are
    /// wiped (explicit_bzero) once used, so no copy stays in freed memory.
    public var carriesSecret: Bool { self == .tlsChunk || self == .clusterHello }
}
