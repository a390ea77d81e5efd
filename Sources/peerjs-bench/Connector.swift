import Crypto
import Glibc

/// Where and how the clients connect: the loop, the server address, and the local source
/// addresses to bind round-robin (127.0.0.1 … 127.0.0.N) when more than ~28k connections are
/// needed.
final class Connector {
    let loop: ClientLoop
    let target: sockaddr_in
    /// `--peer-port`: where odd-numbered peers connect (another instance); nil: `target`.
    let peerTarget: sockaddr_in?
    let sources: [sockaddr_in]
    let path: String
    let key: String
    let hostHeader: String
    let jwtSecret: SymmetricKey?
    private var nextSource = 0

    init(loop: ClientLoop, options: ClientSettings) throws {
        self.loop = loop
        target = try Self.address(options.host, port: options.port)
        peerTarget = try options.peerPort.map { try Self.address(options.host, port: $0) }
        sources = try options.sourceAddresses > 1
            ? (1...options.sourceAddresses).map { try Self.address("127.0.0.\($0)", port: 0) }
            : []
        path = options.path.hasSuffix("/") ? options.path : options.path + "/"
        key = options.key
        hostHeader = "\(options.host):\(options.port)"
        jwtSecret = options.jwtSecret.map { SymmetricKey(data: $0) }
    }

    private static func address(_ host: String, port: Int) throws -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw ClientError.system("inet_pton \(host)", EINVAL) }
        return address
    }

    /// `t<index>`, or with a JWT secret an HS256 JWT whose `sub` is the id (valid for an hour).
    func token(id: String, index: Int) -> String {
        guard let jwtSecret else { return "t\(index)" }
        var input = Self.jwtHeader
        input.append(UInt8(ascii: "."))
        Self.appendBase64URL(Array(#"{"sub":"\#(id)","exp":\#(jwtExpiry)}"#.utf8), to: &input)
        let mac = HMAC<SHA256>.authenticationCode(for: input, using: jwtSecret)
        input.append(UInt8(ascii: "."))
        Self.appendBase64URL(Array(mac), to: &input)
        return String(decoding: input, as: UTF8.self)
    }

    private let jwtExpiry = Int(time(nil)) + 3600
    private static let jwtHeader: [UInt8] = {
        var out: [UInt8] = []
        appendBase64URL(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8), to: &out)
        return out
    }()
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Base64 with the URL alphabet and no padding (RFC 7515 §2).
    private static func appendBase64URL(_ bytes: [UInt8], to out: inout [UInt8]) {
        var i = 0
        while i + 3 <= bytes.count {
            let v = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            out += [alphabet[v >> 18], alphabet[(v >> 12) & 63], alphabet[(v >> 6) & 63], alphabet[v & 63]]
            i += 3
        }
        if bytes.count - i == 1 {
            let v = Int(bytes[i]) << 16
            out += [alphabet[v >> 18], alphabet[(v >> 12) & 63]]
        } else if bytes.count - i == 2 {
            let v = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8
            out += [alphabet[v >> 18], alphabet[(v >> 12) & 63], alphabet[(v >> 6) & 63]]
        }
    }

    /// The HTTP upgrade request of a peer, built once.
    func upgradeRequest(id: String, token: String) -> [UInt8] {
        Array(("GET \(path)peerjs?key=\(key)&id=\(id)&token=\(token)&version=1.5.4 HTTP/1.1\r\n"
            + "Host: \(hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
    }

    func makePeer(index: Int, id: String, events: any PeerEvents) -> PeerConnection {
        PeerConnection(index: index, id: id, request: upgradeRequest(id: id, token: token(id: id, index: index)),
                       loop: loop, events: events)
    }

    /// Opens the TCP connection of `peer` (non-blocking); the peer does the rest.
    func connect(_ peer: PeerConnection) {
        peer.state = .connecting
        peer.startNanos = nowNanos()
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            peer.fail("connect: \(ClientError.system("socket", errno))")
            return
        }
        var one: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        // Like a browser: no Nagle delay on small writes.
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, size)
        if !sources.isEmpty {
            var source = sources[nextSource]
            nextSource = (nextSource + 1) % sources.count
            // The ephemeral port is chosen at connect(), not bind(): with a bound source address
            // the kernel would otherwise pick a port unique across all destinations.
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, size)
            setsockopt(fd, Int32(IPPROTO_IP), Self.ipBindAddressNoPort, &one, size)
            let bound = withUnsafePointer(to: &source) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                let error = errno
                close(fd)
                peer.fail("connect: \(ClientError.system("bind", error))")
                return
            }
        }
        var address = peer.index & 1 == 1 ? peerTarget ?? target : target
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 || errno == EINPROGRESS else {
            let error = errno
            close(fd)
            peer.fail("connect: \(ClientError.system("connect", error))")
            return
        }
        peer.attach(fd)
    }

    /// IP_BIND_ADDRESS_NO_PORT (linux/in.h), which Glibc's module does not export.
    private static let ipBindAddressNoPort: Int32 = 24
}
