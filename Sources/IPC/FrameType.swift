/// The processes that talk over IPC channels, so every frame type can name who may send it and
/// who may receive it, and a receiver can refuse frames that travel the wrong way.
public enum Role: String, CaseIterable, Sendable {
    case supervisor
    case broker
    case auth
}

/// The row of the frame table that describes one ``FrameType``: it is looked up on every send
/// and every receive, so direction, descriptor passing and size caps live in one place.
/// - Parameters:
///   - name: the name used in logs.
///   - sender: the only role that may send this type.
///   - receiver: the only role that may receive this type.
///   - carriesFD: whether exactly one descriptor travels with every frame of this type (and
///     never with any other type).
///   - maxPayload: the largest payload in bytes (at most ``FrameType/maxPayloadCap``).
public struct FrameSpec: Equatable, Sendable {
    public let name: String
    public let sender: Role
    public let receiver: Role
    public let carriesFD: Bool
    public let maxPayload: Int
}

/// THE table of IPC frame types: every type any channel may carry, with its direction, whether
/// it carries a descriptor, and its payload cap. Adding a type means adding one case and one line
/// in ``spec``; nothing else in the module knows the list.
public enum FrameType: UInt16, CaseIterable, Sendable {
    // supervisor <-> broker
    case hello = 1
    case ready = 2
    case connection = 3
    case drain = 4
    case stats = 5
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

    /// No frame type may declare a payload cap above this (64 KiB).
    public static let maxPayloadCap = 64 * 1024

    /// This type's row of the table.
    public var spec: FrameSpec {
        switch self {
        //                                  name           sender       receiver    fd     max payload
        case .hello:       FrameSpec(name: "hello",       sender: .supervisor, receiver: .broker,     carriesFD: false, maxPayload: 32 * 1024)
        case .ready:       FrameSpec(name: "ready",       sender: .broker,     receiver: .supervisor, carriesFD: false, maxPayload: 0)
        case .connection:  FrameSpec(name: "connection",  sender: .supervisor, receiver: .broker,     carriesFD: true,  maxPayload: 512)
        case .drain:       FrameSpec(name: "drain",       sender: .supervisor, receiver: .broker,     carriesFD: false, maxPayload: 16)
        case .stats:       FrameSpec(name: "stats",       sender: .broker,     receiver: .supervisor, carriesFD: false, maxPayload: 64)
        case .reload:      FrameSpec(name: "reload",      sender: .supervisor, receiver: .broker,     carriesFD: false, maxPayload: 32 * 1024)
        case .authChannel: FrameSpec(name: "authChannel", sender: .supervisor, receiver: .broker,     carriesFD: true,  maxPayload: 0)
        case .credit:      FrameSpec(name: "credit",      sender: .broker,     receiver: .supervisor, carriesFD: false, maxPayload: 4)
        case .authQuery:   FrameSpec(name: "authQuery",   sender: .broker,     receiver: .auth,       carriesFD: false, maxPayload: 6 * 1024)
        case .authVerdict: FrameSpec(name: "authVerdict", sender: .auth,       receiver: .broker,     carriesFD: false, maxPayload: 512)
        case .peerEvent:   FrameSpec(name: "peerEvent",   sender: .broker,     receiver: .auth,       carriesFD: false, maxPayload: 1024)
        case .authReload:  FrameSpec(name: "authReload",  sender: .supervisor, receiver: .auth,       carriesFD: false, maxPayload: 0)
        case .tlsChunk:    FrameSpec(name: "tlsChunk",    sender: .supervisor, receiver: .broker,     carriesFD: false, maxPayload: 16 * 1024)
        case .tlsAck:      FrameSpec(name: "tlsAck",      sender: .broker,     receiver: .supervisor, carriesFD: false, maxPayload: 1024)
        }
    }

    public var name: String { spec.name }
    public var sender: Role { spec.sender }
    public var receiver: Role { spec.receiver }
    public var carriesFD: Bool { spec.carriesFD }
    public var maxPayload: Int { spec.maxPayload }

    /// Whether frames of this type carry private-key bytes: their records and payloads are
    /// wiped (explicit_bzero) once used, so no copy stays in freed memory.
    public var carriesSecret: Bool { self == .tlsChunk }
}
