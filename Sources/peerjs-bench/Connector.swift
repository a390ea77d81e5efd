import Crypto
import Foundation
import NIOCore
import NIOPosix

/// Where and how the clients connect: one event loop, the server address, and the local
/// source addresses to bind round-robin (127.0.0.1 … 127.0.0.N) when more than ~28k
/// connections are needed.
final class Connector {
    let loop: any EventLoop
    let target: SocketAddress
    let sources: [SocketAddress]
    let path: String
    let key: String
    let hostHeader: String
    let jwtSecret: SymmetricKey?
    private var nextSource = 0
    /// Ephemeral port chosen at connect(), not bind(): with a bound source address the kernel
    /// would otherwise pick a port unique across all destinations.
    private static let bindAddressNoPort = ChannelOptions.Types.SocketOption(
        level: NIOBSDSocket.OptionLevel(rawValue: 0), name: NIOBSDSocket.Option(rawValue: 24))

    init(loop: any EventLoop, options: ClientSettings) throws {
        self.loop = loop
        target = try SocketAddress(ipAddress: options.host, port: options.port)
        sources = try options.sourceAddresses > 1
            ? (1...options.sourceAddresses).map { try SocketAddress(ipAddress: "127.0.0.\($0)", port: 0) }
            : []
        path = options.path.hasSuffix("/") ? options.path : options.path + "/"
        key = options.key
        hostHeader = "\(options.host):\(options.port)"
        jwtSecret = options.jwtSecret.map { SymmetricKey(data: $0) }
    }

    /// `t<index>`, or with a JWT secret an HS256 JWT whose `sub` is the id (valid for an hour).
    func token(id: String, index: Int) -> String {
        guard let jwtSecret else { return "t\(index)" }
        let input = Self.jwtHeader + "." + Self.base64URL(Array(#"{"sub":"\#(id)","exp":\#(jwtExpiry)}"#.utf8))
        return input + "." + Self.base64URL(Array(HMAC<SHA256>.authenticationCode(for: Array(input.utf8), using: jwtSecret)))
    }

    private let jwtExpiry = Int(Date().timeIntervalSince1970) + 3600
    private static let jwtHeader = base64URL(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))

    /// Base64 with the URL alphabet and no padding (RFC 7515 §2), in one pass over Foundation's.
    private static func base64URL(_ bytes: [UInt8]) -> String {
        String(decoding: Data(bytes).base64EncodedString().utf8.compactMap { byte -> UInt8? in
            switch byte {
            case UInt8(ascii: "+"): UInt8(ascii: "-")
            case UInt8(ascii: "/"): UInt8(ascii: "_")
            case UInt8(ascii: "="): nil
            default: byte
            }
        }, as: UTF8.self)
    }

    /// The HTTP upgrade request of a peer, built once.
    func upgradeRequest(id: String, token: String) -> [UInt8] {
        Array(("GET \(path)peerjs?key=\(key)&id=\(id)&token=\(token)&version=1.5.4 HTTP/1.1\r\n"
            + "Host: \(hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
    }

    func makePeer(index: Int, id: String, events: any PeerEvents) -> PeerConnection {
        PeerConnection(index: index, id: id, request: upgradeRequest(id: id, token: token(id: id, index: index)), events: events)
    }

    /// Opens the TCP connection of `peer`; the peer's handler does the rest.
    func connect(_ peer: PeerConnection) {
        loop.preconditionInEventLoop()
        peer.state = .connecting
        peer.startNanos = nowNanos()
        var bootstrap = ClientBootstrap(group: loop).connectTimeout(.seconds(10))
        if !sources.isEmpty {
            // Only a bound socket needs SO_REUSEADDR; each option is a syscall and a future.
            bootstrap = bootstrap.channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelOption(Self.bindAddressNoPort, value: 1).bind(to: sources[nextSource])
            nextSource = (nextSource + 1) % sources.count
        }
        let bound = NIOLoopBound(peer, eventLoop: loop)
        bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(bound.value) }
            }
            .connect(to: target)
            .assumeIsolated()
            .whenFailure { error in peer.fail("connect: \(error)") }
    }
}
