/// SDP-like signalling messages like the ones a PeerJS 1.x data connection sends (§5 of the
/// protocol): an OFFER/ANSWER with a ~1 KiB payload whose `"ts"` carries the send time.
enum Payloads {
    /// A data-channel SDP as Chrome writes it, JSON-escaped (`\r\n` as two characters each).
    private static func sdp(_ kind: String) -> String {
        let lines = [
            "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
            "a=extmap-allow-mixed", "a=msid-semantic: WMS", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            "a=candidate:3372467384 1 udp 2113937151 c3b1f1d2-5a38-4e51-9d0b-6e8f2f7d1a10.local 54321 typ host generation 0 network-cost 999",
            "a=candidate:842163049 1 udp 1677729535 203.0.113.17 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0 network-cost 999",
            "a=ice-ufrag:Zq7n", "a=ice-pwd:7vL0jXQe4m0bT1f3Jd2XkU9s", "a=ice-options:trickle",
            "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF",
            "a=setup:\(kind == "offer" ? "actpass" : "active")", "a=mid:0", "a=sctp-port:5000", "a=max-message-size:262144",
        ]
        return lines.joined(separator: "\\r\\n") + "\\r\\n"
    }

    private static let zeros = String(repeating: "0", count: FrameTemplate.digits)

    /// The OFFER peer `index` sends to `dst` (or an ANSWER), stamped at send time.
    static func signal(type: String, dst: String, connection: Int) -> FrameTemplate {
        let kind = type == "OFFER" ? "offer" : "answer"
        var json = "{\"type\":\"\(type)\",\"dst\":\"\(dst)\",\"payload\":{\"ts\":\"\(zeros)\","
        json += "\"sdp\":{\"type\":\"\(kind)\",\"sdp\":\"\(sdp(kind))\"},\"type\":\"data\","
        json += "\"connectionId\":\"dc_\(connection)\",\"label\":\"dc_\(connection)\",\"reliable\":true,"
        json += "\"serialization\":\"binary\"}}"
        return FrameTemplate(json: json)
    }

    /// A short ANSWER to `dst` (the churn scenario's echo peers build one per session).
    static func answer(dst: [UInt8]) -> [UInt8] {
        var payload = Array("{\"type\":\"ANSWER\",\"dst\":\"".utf8)
        payload += dst
        payload += Array("\",\"payload\":{\"sdp\":{\"type\":\"answer\",\"sdp\":\"v=0\\r\\na=setup:active\\r\\n\"},\"type\":\"data\",\"connectionId\":\"dc_0\"}}".utf8)
        return WSFrame.masked(opcode: 0x1, payload: payload)
    }
}
