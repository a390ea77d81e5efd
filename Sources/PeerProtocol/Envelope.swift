// TEMPORARY stub so the engine compiles before the real scanner lands (branch `envelope`).
public enum MessageType: Equatable, Sendable {
    case open, error, idTaken, invalidKey, heartbeat, offer, answer, candidate, leave, expire, unknown(String)
    public init(wireName: String) {
        switch wireName {
        case "OPEN": self = .open
        case "ERROR": self = .error
        case "ID-TAKEN": self = .idTaken
        case "INVALID-KEY": self = .invalidKey
        case "HEARTBEAT": self = .heartbeat
        case "OFFER": self = .offer
        case "ANSWER": self = .answer
        case "CANDIDATE": self = .candidate
        case "LEAVE": self = .leave
        case "EXPIRE": self = .expire
        default: self = .unknown(wireName)
        }
    }
    public var wireName: String {
        switch self {
        case .open: "OPEN"
        case .error: "ERROR"
        case .idTaken: "ID-TAKEN"
        case .invalidKey: "INVALID-KEY"
        case .heartbeat: "HEARTBEAT"
        case .offer: "OFFER"
        case .answer: "ANSWER"
        case .candidate: "CANDIDATE"
        case .leave: "LEAVE"
        case .expire: "EXPIRE"
        case .unknown(let s): s
        }
    }
}
public struct Envelope: Sendable, Equatable {
    public var type: MessageType?
    public var dst: String?
    public var payload: Range<Int>?
}
public enum EnvelopeParser {
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Envelope? { parse(Array(bytes)) }
    public static func parse(_ bytes: [UInt8]) -> Envelope? {
        // naive: find "type":"X" and "dst":"Y" and "payload":{...} — stub only
        let s = String(decoding: bytes, as: UTF8.self)
        guard s.hasPrefix("{") else { return nil }
        func str(_ k: String) -> String? {
            guard let r = s.firstRange(of: "\"\(k)\":\"") else { return nil }
            let rest = s[r.upperBound...]
            guard let e = rest.firstIndex(of: "\"") else { return nil }
            return String(rest[..<e])
        }
        var env = Envelope(type: str("type").map(MessageType.init(wireName:)), dst: str("dst"), payload: nil)
        if let r = s.utf8.firstRange(of: Array("\"payload\":".utf8)) {
            let start = s.utf8.distance(from: s.utf8.startIndex, to: r.upperBound)
            env.payload = start..<(bytes.count - 1)
        }
        return env
    }
}
public enum EnvelopeWriter {
    static func str(_ s: String, _ out: inout [UInt8]) { out.append(34); out.append(contentsOf: s.utf8); out.append(34) }
    public static func write(type: String, src: String?, dst: String?, payload: UnsafeRawBufferPointer?, into out: inout [UInt8]) {
        out.append(contentsOf: "{\"type\":".utf8); str(type, &out)
        if let src { out.append(contentsOf: ",\"src\":".utf8); str(src, &out) }
        if let dst { out.append(contentsOf: ",\"dst\":".utf8); str(dst, &out) }
        if let payload { out.append(contentsOf: ",\"payload\":".utf8); out.append(contentsOf: payload) }
        out.append(125)
    }
    public static func encode(type: String, src: String?, dst: String?, payload: UnsafeRawBufferPointer?) -> [UInt8] {
        var o: [UInt8] = []; write(type: type, src: src, dst: dst, payload: payload, into: &o); return o
    }
    public static func error(_ message: String) -> [UInt8] { Array("{\"type\":\"ERROR\",\"payload\":{\"msg\":\"\(message)\"}}".utf8) }
    public static func idTaken() -> [UInt8] { Array("{\"type\":\"ID-TAKEN\",\"payload\":{\"msg\":\"ID is taken\"}}".utf8) }
}
