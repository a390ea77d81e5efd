/// The payload of `clusterHello` (supervisor → cluster role, the opening frame): where the
/// database is and who this instance is. The supervisor resolved the host name and read the
/// password file; the role, chrooted, gets numeric addresses and the password itself.
/// - Parameters:
///   - process: its log level and sandbox (``ChildSettings``).
///   - addresses: the database server's numeric addresses (IPv4 or IPv6), tried in order.
///   - port: its TCP port.
///   - user, database: the PostgreSQL role and database.
///   - password: empty when none (trust or peer authentication).
///   - instance: this instance's name in the directory, `[A-Za-z0-9_.-]{1,40}`.
///   - expirySeconds: the rows of an instance that stopped refreshing are free after this.
public struct ClusterSettings: IPCMessage {
    @inlinable public static var frameType: FrameType { .clusterHello }

    public static let maxAddresses = 16
    public static let maxNameLength = 63  // PostgreSQL's identifier limit
    public static let maxPasswordLength = 1024
    public static let maxInstanceLength = 40

    public var process: ChildSettings
    public var addresses: [String]
    public var port: UInt16
    public var user: String
    public var database: String
    public var password: String
    public var instance: String
    public var expirySeconds: UInt32

    public init(process: ChildSettings, addresses: [String], port: UInt16, user: String, database: String,
                password: String, instance: String, expirySeconds: UInt32) {
        self.process = process
        self.addresses = addresses
        self.port = port
        self.user = user
        self.database = database
        self.password = password
        self.instance = instance
        self.expirySeconds = expirySeconds
    }

    /// Whether `name` can name an instance: 1–40 of `A-Z a-z 0-9 _ . -` (it is part of a
    /// quoted NOTIFY channel name and of log lines).
    public static func isValidInstance(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maxInstanceLength
            && name.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F || $0 == 0x2E || $0 == 0x2D }
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        process = try ChildSettings(reading: &r)
        addresses = try r.readStringList(maxCount: Self.maxAddresses, maxLength: 64)
        port = try r.readUInt16()
        user = try r.readString(maxLength: Self.maxNameLength)
        database = try r.readString(maxLength: Self.maxNameLength)
        password = try r.readString(maxLength: Self.maxPasswordLength)
        instance = try r.readString(maxLength: Self.maxInstanceLength)
        expirySeconds = try r.readUInt32()
        try r.finish()
        guard Self.isValidInstance(instance) else { throw IPCError(.malformedPayload, "clusterHello names an invalid instance") }
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        process.write(to: &w)
        w.writeStringList(addresses)
        w.writeUInt16(port)
        for text in [user, database, password, instance] { w.writeString(text) }
        w.writeUInt32(expirySeconds)
        return w.bytes
    }
}

/// The (empty) payload of `clusterChannel`: the broker's end of a fresh broker↔cluster-role
/// channel travels beside it (at start and after every restart of the role).
public struct ClusterChannelHandoff: EmptyIPCMessage {
    @inlinable public static var frameType: FrameType { .clusterChannel }
    public init() {}
}

/// The payload of `clusterClaim` (broker → cluster role): claim `id` of realm `key` for this
/// instance. The token travels as its SHA-256 (the directory never holds a client's token).
/// The answer is a ``ClusterAnswer`` with the same request id.
public struct ClusterClaim: IPCMessage {
    @inlinable public static var frameType: FrameType { .clusterClaim }

    public static let maxKeyLength = 256
    public static let maxIDLength = 512

    public var key: String
    public var id: String
    public var tokenHash: [UInt8]
    /// `concurrent_limit`, cluster-wide; 0: none.
    public var limit: UInt32

    public init(key: String, id: String, tokenHash: [UInt8], limit: UInt32) {
        self.key = key
        self.id = id
        self.tokenHash = tokenHash
        self.limit = limit
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        key = try r.readString(maxLength: Self.maxKeyLength)
        id = try r.readString(maxLength: Self.maxIDLength)
        tokenHash = try r.readBytes(maxLength: 32)
        limit = try r.readUInt32()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeString(key)
        w.writeString(id)
        w.writeBytes(tokenHash)
        w.writeUInt32(limit)
        return w.bytes
    }
}

/// The payload of `clusterAnswer` (cluster role → broker): the directory's answer to a claim.
public struct ClusterAnswer: IPCMessage {
    @inlinable public static var frameType: FrameType { .clusterAnswer }

    public enum Outcome: UInt8, Sendable {
        case granted = 0, taken = 1, limit = 2, unavailable = 3
    }

    public var outcome: Outcome

    public init(_ outcome: Outcome) { self.outcome = outcome }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        let raw = try r.readUInt8()
        try r.finish()
        guard let outcome = Outcome(rawValue: raw) else { throw IPCError(.malformedPayload, "clusterAnswer outcome \(raw) is unknown") }
        self.outcome = outcome
    }

    public func encode() -> [UInt8] { [outcome.rawValue] }
}

/// The payload of `clusterRelease` (broker → cluster role): this instance no longer holds `id`.
public struct ClusterRelease: IPCMessage {
    @inlinable public static var frameType: FrameType { .clusterRelease }

    public var key: String
    public var id: String

    public init(key: String, id: String) {
        self.key = key
        self.id = id
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        key = try r.readString(maxLength: ClusterClaim.maxKeyLength)
        id = try r.readString(maxLength: ClusterClaim.maxIDLength)
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeString(key)
        w.writeString(id)
        return w.bytes
    }
}

/// The payload of `clusterSend` (broker → cluster role) and `clusterDeliver` (cluster role →
/// broker): one PeerJS frame, as the destination receives it, for `id` of realm `key`, from
/// `source`. `instance` is where it goes (`clusterSend`) or where it came from (`clusterDeliver`).
public struct ClusterRelay: Equatable, Sendable {
    /// The largest relayed frame: what fits in one IPC frame beside its names.
    public static let maxFrameBytes = FrameType.maxPayloadCap - 2 * 1024

    public var instance: String
    public var key: String
    public var id: String
    public var source: String
    public var frame: [UInt8]

    public init(instance: String, key: String, id: String, source: String, frame: [UInt8]) {
        self.instance = instance
        self.key = key
        self.id = id
        self.source = source
        self.frame = frame
    }

    init(reading r: inout PayloadReader) throws(IPCError) {
        instance = try r.readString(maxLength: ClusterSettings.maxInstanceLength)
        key = try r.readString(maxLength: ClusterClaim.maxKeyLength)
        id = try r.readString(maxLength: ClusterClaim.maxIDLength)
        source = try r.readString(maxLength: ClusterClaim.maxIDLength)
        frame = try r.readBytes(maxLength: Self.maxFrameBytes)
        try r.finish()
    }

    func write(to w: inout PayloadWriter) {
        for text in [instance, key, id, source] { w.writeString(text) }
        w.writeBytes(frame)
    }
}

/// A message whose payload is one ``ClusterRelay``: `clusterSend` and `clusterDeliver`.
public protocol ClusterRelayMessage: IPCMessage {
    var relay: ClusterRelay { get }
    init(_ relay: ClusterRelay)
}

extension ClusterRelayMessage {
    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        self.init(try ClusterRelay(reading: &r))
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter(reservingCapacity: relay.frame.count + 128)
        relay.write(to: &w)
        return w.bytes
    }
}

/// `clusterSend`: see ``ClusterRelay``.
public struct ClusterSend: ClusterRelayMessage {
    @inlinable public static var frameType: FrameType { .clusterSend }
    public var relay: ClusterRelay
    public init(_ relay: ClusterRelay) { self.relay = relay }
}

/// `clusterDeliver`: see ``ClusterRelay``.
public struct ClusterDeliver: ClusterRelayMessage {
    @inlinable public static var frameType: FrameType { .clusterDeliver }
    public var relay: ClusterRelay
    public init(_ relay: ClusterRelay) { self.relay = relay }
}

/// The payload of `clusterPeer` (cluster role → broker): a change of the directory that the
/// broker's view of the other instances follows.
public struct ClusterPeerChange: IPCMessage {
    @inlinable public static var frameType: FrameType { .clusterPeer }

    public enum Change: UInt8, Sendable {
        /// `instance` registered `id`.
        case registered = 0
        /// `instance` gave `id` up.
        case released = 1
        /// `id` moved to `instance` with the same token: drop the local peer (the row is not ours).
        case movedElsewhere = 2
        /// Forget every remote id: the directory is announced again from scratch (names empty).
        case reset = 3
        /// `instance` stopped refreshing its rows (it crashed or lost the database): forget its ids.
        case instanceGone = 4
    }

    public var change: Change
    public var instance: String
    public var key: String
    public var id: String

    public init(_ change: Change, instance: String = "", key: String = "", id: String = "") {
        self.change = change
        self.instance = instance
        self.key = key
        self.id = id
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        let raw = try r.readUInt8()
        guard let change = Change(rawValue: raw) else { throw IPCError(.malformedPayload, "clusterPeer change \(raw) is unknown") }
        self.change = change
        instance = try r.readString(maxLength: ClusterSettings.maxInstanceLength)
        key = try r.readString(maxLength: ClusterClaim.maxKeyLength)
        id = try r.readString(maxLength: ClusterClaim.maxIDLength)
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeUInt8(change.rawValue)
        for text in [instance, key, id] { w.writeString(text) }
        return w.bytes
    }
}

/// The payload of `clusterState` (cluster role → broker): whether the directory answers now.
public struct ClusterState: IPCMessage {
    @inlinable public static var frameType: FrameType { .clusterState }

    public var available: Bool

    public init(available: Bool) { self.available = available }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        available = try r.readBool()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter()
        w.writeBool(available)
        return w.bytes
    }
}
