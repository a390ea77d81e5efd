import FuzzSupport
import IPC

/// libFuzzer's entry. The low four bits of the first byte pick the reader: 0, a whole record
/// through `FrameCodec.decode` (bit 4: a descriptor came with it; bits 5–7: the channel's
/// roles) and then its payload through its type's decoder; 1, a run of `tlsChunk` payloads
/// (each after a big-endian u16 length) through `TLSChunkAssembler`; 15, a run of frame types
/// through a `FrameGate` (see ``checkGate(_:end:)``); 2 to 14, the rest as the payload of the
/// message type of `FrameType.allCases[(high four bits) * 13 + low four bits - 2]` (2 hello,
/// 3 ready, 4 connection, 5 drain, 6 reload, 7 authChannel, 8 credit, 9 authQuery,
/// 10 authVerdict, 11 peerEvent, 12 authReload, 13 tlsChunk, 14 tlsAck, 0x12 authHello, 0x13 to 0x1B
/// the cluster frames in their declaration order); 0x11, a run of notification records between
/// instances (``ClusterRecord``).
/// Whatever decodes must encode to the same bytes and decode to an equal value.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzIPC(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let all = UnsafeRawBufferPointer(start: data, count: size)
    guard let selector = all.first else { return 0 }
    let input = Array(all.dropFirst())
    switch selector & 0x0F {
    case 0:
        checkRecord(input, fdAttached: selector & 0x10 != 0, roles: roles(Int(selector >> 5)))
    case 1 where selector >> 4 == 1:
        checkClusterRecords(input)
    case 1:
        checkTLSChunks(input)
    case 15:
        checkGate(input, end: roles(1 + Int(selector >> 5)) ?? ChannelRoles(local: .broker, remote: .supervisor))
    case let reader:
        let types = FrameType.allCases
        checkPayload(of: types[(Int(selector >> 4) * 13 + Int(reader) - 2) % types.count])(input)
    }
    return 0
}

@main
enum FuzzIPC {
    static func main() { FuzzMain.run(fuzzIPC) }
}

/// nil (no direction check) or one of the ordered pairs of roles: the six of the first three
/// roles first (so the seeds keep their meaning), then those with the cluster role.
func roles(_ pick: Int) -> ChannelRoles? {
    let first: [Role] = [.supervisor, .broker, .auth]
    var pairs: [ChannelRoles] = []
    for local in first {
        for remote in first where remote != local { pairs.append(ChannelRoles(local: local, remote: remote)) }
    }
    for other in Role.allCases where !first.contains(other) {
        for role in Role.allCases where role != other {
            pairs += [ChannelRoles(local: other, remote: role), ChannelRoles(local: role, remote: other)]
        }
    }
    return pick == 0 ? nil : pairs[(pick - 1) % pairs.count]
}

/// Selector 0x11: a notification payload between instances (``ClusterRecord``): whatever
/// parses must encode to the same bytes.
func checkClusterRecords(_ input: [UInt8]) {
    guard let records = ClusterRecord.parse(input) else { return }
    precondition(records.flatMap(\.encoded) == input, "cluster records: parse then encode changed the payload")
}

func checkRecord(_ record: [UInt8], fdAttached: Bool, roles: ChannelRoles?) {
    guard let (header, payload) = try? FrameCodec.decode(record: record, fdAttached: fdAttached, roles: roles) else {
        return
    }
    precondition(payload.count == Int(header.payloadLength) && payload.count <= header.type.maxPayload)
    precondition(header.hasFD == fdAttached && fdAttached == header.type.carriesFD)
    // The sender's side of the same channel builds the same record.
    let senderRoles = roles.map { ChannelRoles(local: $0.remote, remote: $0.local) }
    guard
        let again = try? FrameCodec.encode(
            type: header.type, requestID: header.requestID, payload: payload, hasFD: header.hasFD, roles: senderRoles)
    else {
        fatalError("a record that decodes does not encode again: \(header)")
    }
    precondition(again == record, "\(header.type.name): decode then encode changed the record")
    checkPayload(of: header.type)(payload)
}

/// The decoder every receiver uses for a frame type's payload. Exhaustive on purpose: a new
/// frame type does not build until its payload reader is fuzzed here too.
func checkPayload(of type: FrameType) -> ([UInt8]) -> Void {
    switch type {
    case .hello: checkMessage(BrokerSettings.self)
    case .reload: checkMessage(BrokerReload.self)
    case .ready: checkMessage(BrokerReady.self)
    case .authChannel: checkMessage(AuthChannelHandoff.self)
    case .authReload: checkMessage(AuthReloadRequest.self)
    case .authHello: checkMessage(AuthHelperSettings.self)
    case .connection: checkMessage(ConnectionHandoff.self)
    case .drain: checkMessage(DrainRequest.self)
    case .credit: checkMessage(AdmissionCredit.self)
    case .authQuery: checkMessage(AuthQuery.self)
    case .authVerdict: checkMessage(AuthVerdict.self)
    case .peerEvent: checkMessage(PeerEventMessage.self)
    case .tlsChunk: checkMessage(TLSChunk.self)
    case .tlsAck: checkMessage(TLSAck.self)
    case .clusterChannel: checkMessage(ClusterChannelHandoff.self)
    case .clusterHello: checkMessage(ClusterSettings.self)
    case .clusterClaim: checkMessage(ClusterClaim.self)
    case .clusterAnswer: checkMessage(ClusterAnswer.self)
    case .clusterRelease: checkMessage(ClusterRelease.self)
    case .clusterSend: checkMessage(ClusterSend.self)
    case .clusterDeliver: checkMessage(ClusterDeliver.self)
    case .clusterPeer: checkMessage(ClusterPeerChange.self)
    case .clusterState: checkMessage(ClusterState.self)
    case .metrics: checkMessage(MetricsText.self)
    }
}

/// Feeds frame types to one gate: a byte with bit 7 set records a question sent (`asked`), one
/// without offers a frame; bits 0–4 pick the type. The gate must never let a frame through out
/// of phase or an answer beyond the questions asked, and a refusal must change nothing.
func checkGate(_ input: [UInt8], end: ChannelRoles) {
    var gate = FrameGate(local: end.local, remote: end.remote)
    var asked: [FrameType: Int] = [:]
    var accepted: [FrameType: Int] = [:]
    let types = FrameType.allCases
    for byte in input {
        let type = types[Int(byte & 0x1F) % types.count]
        if byte & 0x80 != 0 {
            gate.asked(type)
            if let answer = type.answer { asked[answer, default: 0] += 1 }
            continue
        }
        let wasOpen = gate.isOpen
        do {
            try gate.accept(type)
        } catch {
            precondition(error.isViolation && gate.isOpen == wasOpen, "\(type.name): a refusal changed the gate or is no violation")
            continue
        }
        precondition(type.sender == end.remote && type.receiver == end.local, "\(type.name) accepted the wrong way")
        precondition(type.phase != .afterOpening || wasOpen, "\(type.name) accepted before the opening frame")
        precondition(type.phase != .opening || !wasOpen, "a second \(type.name) accepted")
        precondition(gate.isOpen || type.phase == .anyTime)
        if type.question != nil {
            accepted[type, default: 0] += 1
            precondition(accepted[type, default: 0] <= asked[type, default: 0], "more \(type.name) accepted than questions asked")
        }
    }
}

/// Decodes `payload` as `M`; a value that decodes must encode to exactly these bytes (the
/// format has one encoding per value) and pass `encodeChecked`.
func checkMessage<M: IPCMessage>(_: M.Type) -> ([UInt8]) -> Void {
    { payload in
        guard let message = try? M(decoding: payload) else { return }
        let encoded = message.encode()
        precondition(encoded == payload, "\(M.self): decode then encode changed the payload")
        guard let again = try? M(decoding: encoded), again == message else {
            fatalError("\(M.self): the re-encoded payload decodes to a different value")
        }
        guard (try? message.encodeChecked()) == payload else {
            fatalError("\(M.self): encodeChecked refuses a decoded value")
        }
        if let handoff = message as? ConnectionHandoff { _ = handoff.peer.description }
    }
}

/// Feeds length-prefixed `tlsChunk` payloads to one assembler, as the broker does with the
/// chunks of successive generations.
func checkTLSChunks(_ input: [UInt8]) {
    var assembler = TLSChunkAssembler()
    var offset = 0
    while input.count - offset >= 2 {
        let length = Int(input[offset]) << 8 | Int(input[offset + 1])
        offset += 2
        let end = min(input.count, offset + length)
        let payload = Array(input[offset..<end])
        offset = end
        guard let chunk = try? TLSChunk(decoding: payload) else { continue }
        do {
            if let material = try assembler.add(chunk) {
                precondition(!material.certificateChainPEM.isEmpty && !(material.privateKeyDER.count == 0))
                precondition(!assembler.isIncomplete)
            }
        } catch {
            precondition(!assembler.isIncomplete, "a refused chunk left a generation open")
        }
    }
}
