/// One record of a notification between instances (docs/cluster.md, "Notifications"): a tag
/// byte, then each field as `LENGTH:BYTES` (decimal length, so ids with spaces or colons
/// travel unchanged). Records are concatenated; a NOTIFY payload holds as many as fit.
/// Another instance's bytes arrive here, so parsing is strict and bounded: any error refuses
/// the whole payload.
public enum ClusterRecord: Equatable, Sendable {
    /// `+`: `instance` registered `id` of realm `key` (channel `peerjs.dir`).
    case registered(instance: String, key: String, id: String)
    /// `-`: `instance` released `id` (channel `peerjs.dir`).
    case released(instance: String, key: String, id: String)
    /// `m`: a PeerJS frame for local peer `id`, from `source` on `instance`.
    case message(instance: String, key: String, id: String, source: String, frame: [UInt8])
    /// `p`: the records are in row `seq` of `peerjs_relay` (too large or not text).
    case stored(seq: Int64)
    /// `x`: `id` moved to `instance` with the same token; drop the local peer.
    case moved(instance: String, key: String, id: String)
    /// `i`: the listener's self-ping.
    case ping(nonce: UInt64)

    /// The largest NOTIFY payload PostgreSQL takes (8000 bytes less its terminating NUL).
    public static let notifyLimit = 7999
    /// The largest field: a frame (``maxFrame``); names are far shorter.
    public static let maxFrame = 64 * 1024
    public static let maxName = 512

    public func encode(into bytes: inout [UInt8]) {
        func field(_ value: some Collection<UInt8>) {
            bytes.append(contentsOf: String(value.count).utf8)
            bytes.append(UInt8(ascii: ":"))
            bytes.append(contentsOf: value)
        }
        switch self {
        case .registered(let instance, let key, let id):
            bytes.append(UInt8(ascii: "+")); field(instance.utf8); field(key.utf8); field(id.utf8)
        case .released(let instance, let key, let id):
            bytes.append(UInt8(ascii: "-")); field(instance.utf8); field(key.utf8); field(id.utf8)
        case .message(let instance, let key, let id, let source, let frame):
            bytes.append(UInt8(ascii: "m")); field(instance.utf8); field(key.utf8); field(id.utf8); field(source.utf8); field(frame)
        case .stored(let seq):
            bytes.append(UInt8(ascii: "p")); field(String(seq).utf8)
        case .moved(let instance, let key, let id):
            bytes.append(UInt8(ascii: "x")); field(instance.utf8); field(key.utf8); field(id.utf8)
        case .ping(let nonce):
            bytes.append(UInt8(ascii: "i")); field(String(nonce).utf8)
        }
    }

    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        encode(into: &bytes)
        return bytes
    }

    /// Every record of `payload`, or nil when any part of it is malformed.
    public static func parse(_ payload: some Collection<UInt8>) -> [ClusterRecord]? {
        var reader = Reader(bytes: Array(payload))
        var records: [ClusterRecord] = []
        while !reader.atEnd {
            guard let record = reader.record() else { return nil }
            records.append(record)
        }
        return records
    }

    private struct Reader {
        let bytes: [UInt8]
        var index = 0

        var atEnd: Bool { index >= bytes.count }

        mutating func field(max: Int) -> ArraySlice<UInt8>? {
            var length = 0
            var digits = 0
            while index < bytes.count, bytes[index] != UInt8(ascii: ":") {
                let byte = bytes[index]
                // Canonical decimal only (no leading zero): one payload, one encoding.
                guard byte >= 0x30, byte <= 0x39, digits < 6, digits == 0 || length > 0 else { return nil }
                length = length * 10 + Int(byte - 0x30)
                digits += 1
                index += 1
            }
            guard digits > 0, index < bytes.count, length <= max, bytes.count - index - 1 >= length else { return nil }
            index += 1
            defer { index += length }
            return bytes[index..<(index + length)]
        }

        mutating func name() -> String? {
            guard let slice = field(max: ClusterRecord.maxName) else { return nil }
            return String(validating: slice, as: UTF8.self)
        }

        /// A decimal in canonical form: digits only, no leading zero (`0` itself aside).
        mutating func number() -> UInt64? {
            guard let slice = field(max: 20), !slice.isEmpty, slice.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                slice.count == 1 || slice.first != 0x30
            else { return nil }
            return UInt64(String(decoding: slice, as: UTF8.self))
        }

        mutating func record() -> ClusterRecord? {
            let tag = bytes[index]
            index += 1
            switch tag {
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "x"):
                guard let instance = name(), let key = name(), let id = name() else { return nil }
                switch tag {
                case UInt8(ascii: "+"): return .registered(instance: instance, key: key, id: id)
                case UInt8(ascii: "-"): return .released(instance: instance, key: key, id: id)
                default: return .moved(instance: instance, key: key, id: id)
                }
            case UInt8(ascii: "m"):
                guard let instance = name(), let key = name(), let id = name(), let source = name(),
                    let frame = field(max: ClusterRecord.maxFrame)
                else { return nil }
                return .message(instance: instance, key: key, id: id, source: source, frame: Array(frame))
            case UInt8(ascii: "p"):
                guard let seq = number(), let value = Int64(exactly: seq) else { return nil }
                return .stored(seq: value)
            case UInt8(ascii: "i"):
                guard let nonce = number() else { return nil }
                return .ping(nonce: nonce)
            default:
                return nil
            }
        }
    }

    /// Whether `bytes` can travel in a NOTIFY payload as text: valid UTF-8 without NUL.
    public static func isNotifiable(_ bytes: [UInt8]) -> Bool {
        !bytes.contains(0) && String(validating: bytes, as: UTF8.self) != nil
    }
}
