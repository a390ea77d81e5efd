import ArgumentParser
import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// `trivial-relay`: the ceiling reference. The least a PeerJS relay can do on SwiftNIO with the
/// same one event loop thread as our broker: WebSocket upgrade, `{"type":"OPEN"}`, an id →
/// channel map, and each text frame forwarded to its `dst` with `"src"` spliced in — no JSON
/// decode, no checks, no queues, no heartbeats. Like the broker it flushes once per destination
/// at the end of each read burst.
struct TrivialRelay: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trivial-relay",
        abstract: "A minimal PeerJS-shaped relay to compare against (prints its port on stderr).")

    @Option(help: "Listen address (127.0.0.x).")
    var host = "127.0.0.1"

    @Option(help: "Port (0: the system picks one; printed on stderr).")
    var port = 0

    func validate() throws {
        guard host.hasPrefix("127.") else { throw ValidationError("--host must be a 127.0.0.x address") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0…65535") }
    }

    func run() throws {
        _ = raiseDescriptorLimit()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let hub = try loop.submit { NIOLoopBound(RelayHub(), eventLoop: loop) }.wait()
        let channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOWebSocketServerUpgrader(
                        maxFrameSize: 1 << 16,
                        automaticErrorHandling: true,
                        shouldUpgrade: { channel, head in
                            channel.eventLoop.makeSucceededFuture(head.uri.hasPrefix("/peerjs?") ? HTTPHeaders() : nil)
                        },
                        upgradePipelineHandler: { channel, head in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    RelayPeerHandler(id: RelayHub.id(in: head.uri), hub: hub.value))
                            }
                        })
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                }
            }
            .bind(host: host, port: port)
            .wait()
        let bound = channel.localAddress?.port ?? port
        let line = Array("Started trivial relay on \(host), port: \(bound)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        try channel.closeFuture.wait()
        try group.syncShutdownGracefully()
    }
}

/// The id → channel map; lives on the relay's one loop.
final class RelayHub {
    var peers: [ArraySlice<UInt8>: any Channel] = [:]
    /// Channels written to during the current read burst: flushed once each at its end, as the
    /// broker does (a writev per message would make this "ceiling" slower than the server).
    var unflushed: [any Channel] = []

    func flush() {
        for channel in unflushed { channel.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    /// The `id` query parameter (taken as is: the bench sends plain ids).
    static func id(in uri: String) -> String {
        let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
        for item in query.split(separator: "&") where item.hasPrefix("id=") { return String(item.dropFirst(3)) }
        return ""
    }
}

final class RelayPeerHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private static let open = Array("{\"type\":\"OPEN\"}".utf8)
    private static let dstKey = Array("\"dst\":\"".utf8)

    private let id: ArraySlice<UInt8>
    private let hub: RelayHub
    /// `{"src":"<id>",` — replaces the opening brace of every message this peer sends.
    private let srcPrefix: [UInt8]

    init(id: String, hub: RelayHub) {
        self.id = ArraySlice(id.utf8)
        self.hub = hub
        srcPrefix = Array("{\"src\":\"\(id)\",".utf8)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        hub.peers[id] = context.channel
        let buffer = context.channel.allocator.buffer(bytes: Self.open)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: buffer)), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let current = hub.peers[id], current === context.channel { hub.peers[id] = nil }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            let message = frame.unmaskedData
            let target: (any Channel)? = message.withUnsafeReadableBytes { raw in
                guard let at = Bytes.find(Self.dstKey, in: raw) else { return nil }
                let start = at + Self.dstKey.count
                var end = start
                while end < raw.count, raw[end] != 0x22 { end += 1 }
                return hub.peers[ArraySlice(raw[start..<end])]
            }
            guard let target, message.readableBytes > 1 else { return }
            // Room in front for the frame header, which NIO's encoder then writes in place.
            var out = target.allocator.buffer(capacity: 10 + message.readableBytes + srcPrefix.count)
            out.moveWriterIndex(forwardBy: 10)
            out.moveReaderIndex(forwardBy: 10)
            out.writeBytes(srcPrefix)
            var rest = message
            rest.moveReaderIndex(forwardBy: 1)
            out.writeBuffer(&rest)
            target.write(WebSocketFrame(fin: true, opcode: .text, data: out), promise: nil)
            if !hub.unflushed.contains(where: { $0 === target }) { hub.unflushed.append(target) }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readSlice(length: 2) ?? context.channel.allocator.buffer(capacity: 0)
            let reply = WebSocketFrame(fin: true, opcode: .connectionClose, data: code)
            context.writeAndFlush(wrapOutboundOut(reply)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        hub.flush()
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
