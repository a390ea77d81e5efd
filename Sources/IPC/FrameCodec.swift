/// The sender/receiver pair of one channel end, so frames that travel the wrong way (for example
/// a `hello` arriving at the supervisor, or an `authVerdict` on the supervisor channel) are refused.
/// - Parameters:
///   - local: the role of the process holding this end.
///   - remote: the role of the process at the other end.
public struct ChannelRoles: Equatable, Sendable {
    public var local: Role
    public var remote: Role

    public init(local: Role, remote: Role) {
        self.local = local
        self.remote = remote
    }
}

/// Builds and checks whole records (header + payload) without any socket, so the validation that
/// every receiver runs is one function that tests and fuzzers can call directly.
public enum FrameCodec {
    /// Largest legal record: header plus the largest payload any type may declare.
    public static let maxRecordSize = FrameHeader.size + FrameType.maxPayloadCap

    /// One record for `type`, checking the payload against the type's cap and `hasFD` against the
    /// table, and the direction when `roles` is given.
    public static func encode(
        type: FrameType, requestID: UInt32 = 0, payload: [UInt8], hasFD: Bool, roles: ChannelRoles? = nil
    ) throws(IPCError) -> [UInt8] {
        if let roles, type.sender != roles.local || type.receiver != roles.remote {
            throw IPCError(.wrongDirection, "\(roles.local.rawValue) may not send \(type.name) to \(roles.remote.rawValue) (the table says \(type.sender.rawValue) → \(type.receiver.rawValue)); this is a bug in the sender")
        }
        guard payload.count <= type.maxPayload else {
            throw IPCError(.oversize, "\(type.name) payload of \(payload.count) bytes exceeds its cap of \(type.maxPayload); split it or raise the cap in FrameType")
        }
        guard hasFD == type.carriesFD else {
            throw IPCError(.fdMismatch, type.carriesFD ? "\(type.name) frames must carry exactly one descriptor" : "\(type.name) frames must not carry a descriptor")
        }
        let header = FrameHeader(type: type, payloadLength: UInt32(payload.count), requestID: requestID, hasFD: hasFD)
        // One exactly sized buffer: one allocation per record, and no reallocation that would
        // leave an unwiped copy of a key chunk behind.
        var record = PayloadWriter(reservingCapacity: FrameHeader.size + payload.count)
        header.encode(into: &record)
        record.writeRaw(payload)
        return record.bytes
    }

    /// Checks one received record strictly: header (version, flags, reserved, known type, cap),
    /// record length == header + payloadLength, HAS_FD ⇔ a descriptor arrived ⇔ the type carries
    /// one, and the direction when `roles` is given. Returns the header and the payload bytes.
    public static func decode(
        record: [UInt8], fdAttached: Bool, roles: ChannelRoles? = nil
    ) throws(IPCError) -> (header: FrameHeader, payload: [UInt8]) {
        guard record.count <= maxRecordSize else {
            throw IPCError(.oversize, "record of \(record.count) bytes exceeds the \(maxRecordSize)-byte maximum; the peer is broken, close the channel")
        }
        let header = try FrameHeader(decoding: record)
        let type = header.type
        let expected = FrameHeader.size + Int(header.payloadLength)
        guard record.count >= expected else {
            throw IPCError(.truncated, "\(type.name) record has \(record.count) bytes, its header declares \(expected); the peer is broken, close the channel")
        }
        guard record.count == expected else {
            throw IPCError(.malformedPayload, "\(type.name) record has \(record.count - expected) bytes after the declared payload; the peer is broken, close the channel")
        }
        if let roles, type.sender != roles.remote || type.receiver != roles.local {
            throw IPCError(.wrongDirection, "\(type.name) frames go \(type.sender.rawValue) → \(type.receiver.rawValue), this one came \(roles.remote.rawValue) → \(roles.local.rawValue); the peer is broken or compromised, close the channel")
        }
        guard header.hasFD == fdAttached, fdAttached == type.carriesFD else {
            throw IPCError(.fdMismatch, "\(type.name) frame: HAS_FD=\(header.hasFD), descriptor attached=\(fdAttached), type carries one=\(type.carriesFD); the peer is broken, close the channel")
        }
        return (header, Array(record[FrameHeader.size...]))
    }
}
