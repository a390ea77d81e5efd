import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import PeerJSKit
import PeerJSTesting
import Testing

/// ``PeerJSServer`` mounted in a plain SwiftNIO HTTP server (no Hummingbird), and what the
/// library product links.
@Suite("PeerJSKit in a plain SwiftNIO server, and its dependency graph")
struct PlainNIOMountTests {
    /// The app's own route: "hello" for any request, then close.
    final class Hello: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            let headers = HTTPHeaders([("Content-Length", "5"), ("Connection", "close")])
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "hello")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
        }
    }

    @Test("ServerBootstrap on the server's loop: the app answers /, PeerJS answers /peerjs; after shutdown() PeerJS refuses")
    func bootstrap() async throws {
        let server = try PeerJSServer(configuration: .init(path: "/peerjs"), logger: MountedApp.quiet)
        let listener = try await ServerBootstrap(group: server.eventLoop)
            .childChannelInitializer { channel in
                _ = server.mount(channel) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(Hello())
                    }
                }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(listener.localAddress?.port)

        #expect(try await HTTPClient.get(port: port, "/").text == "hello")
        #expect(try await HTTPClient.get(port: port, "/peerjs").text == ProtocolText.serverInfo)
        let peer = try await WSClient.connect(port: port, path: "/peerjs/peerjs", query: "key=peerjs&id=frank&token=f")
        #expect(try await peer.nextJSON()["type"] == .string("OPEN"))
        #expect(try await server.statistics().registered == 1)

        await server.shutdown()
        #expect(try await peer.waitForClose().code == 1001)
        await #expect(throws: (any Error).self, "served after shutdown") { try await HTTPClient.get(port: port, "/peerjs") }
        #expect(try await HTTPClient.get(port: port, "/").text == "hello", "the app goes on")
        try await listener.close()
    }

    @Test("the library links no libseccomp or libsystemd (the example app's binary); the daemon does (the check can fail)")
    func dependencyGraph() async throws {
        func linked(_ binary: String) async throws -> String {
            let ldd = try ChildProcess("/usr/bin/ldd", [binary])
            _ = await ldd.wait(timeout: .seconds(30))
            return ldd.output
        }
        let example = try await linked(try ServerProcess.locateBinary("peerjs-hummingbird-example"))
        #expect(example.contains("libc.so"), "ldd gave no list: \(example)")
        #expect(!example.contains("libseccomp") && !example.contains("libsystemd"), "\(example)")
        let daemon = try await linked(try ServerProcess.locateBinary("peerjs"))
        #expect(daemon.contains("libseccomp") && daemon.contains("libsystemd"), "\(daemon)")
    }
}
