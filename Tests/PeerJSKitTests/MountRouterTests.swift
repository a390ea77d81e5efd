import Logging
import NIOCore
import NIOEmbedded
import PeerJSKit
import Synchronization
import Testing

/// ``PeerJSServer/mount(_:otherwise:)`` on an in-memory channel and NIO's virtual time: which
/// side gets a connection, what it is passed, and the deadline of a connection that never says.
@Suite("PeerJSServer.mount: the first request line decides")
struct MountRouterTests {
    /// Records what the app's pipeline is given.
    final class AppSide: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = Mutex("")

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            received.withLock { $0 += String(buffer: bytes) }
        }
    }

    struct Setup {
        let loop = EmbeddedEventLoop()
        let server: PeerJSServer
        let channel: EmbeddedChannel
        let app = AppSide()
        let route: EventLoopFuture<PeerJSServer.Route<String>>

        init(handshakeTimeoutMs: Int64 = 1000, maxHeaderBytes: Int = 4096) throws {
            server = PeerJSServer(
                configuration: .init(path: "/peerjs", handshakeTimeoutMs: handshakeTimeoutMs, maxHeaderBytes: maxHeaderBytes),
                eventLoop: loop, logger: MountedApp.quiet)
            loop.run()  // the server's state is set up by a task on its loop
            channel = EmbeddedChannel(loop: loop)
            let app = self.app
            route = server.mount(channel) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(app)
                    return "the app's"
                }
            }
            try channel.connect(to: SocketAddress(ipAddress: "192.0.2.9", port: 4000)).wait()
        }

        func send(_ text: String) throws {
            try channel.writeInbound(ByteBuffer(string: text))
        }

        func written() throws -> String {
            var text = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
            return text
        }

        /// The route, if decided (the future of an `EmbeddedEventLoop` completes synchronously).
        var decided: PeerJSServer.Route<String>? {
            let result = Mutex<PeerJSServer.Route<String>?>(nil)
            route.whenSuccess { route in result.withLock { $0 = route } }
            return result.withLock { $0 }
        }
    }

    @Test("a target under the base path: the PeerJS server answers, from the bytes already read")
    func peerJS() throws {
        let setup = try Setup()
        try setup.send("GET /peerjs/peerjs/id HTT")
        #expect(setup.decided == nil, "decided before the request line was complete")
        try setup.send("P/1.1\r\nHost: h\r\n\r\n")
        guard case .peerJS = setup.decided else { Issue.record("route: \(String(describing: setup.decided))"); return }
        #expect(try setup.written().hasPrefix("HTTP/1.1 200 OK"))
        #expect(setup.app.received.withLock { $0 }.isEmpty)
        _ = try setup.channel.finish(acceptAlreadyClosed: true)
    }

    @Test("any other target: the app's pipeline is set up and gets every byte, the first line included")
    func app() throws {
        let setup = try Setup()
        try setup.send("GET /index.html HTTP/1.1\r\n")
        try setup.send("Host: h\r\n\r\n")
        guard case .other("the app's") = setup.decided else { Issue.record("route: \(String(describing: setup.decided))"); return }
        #expect(setup.app.received.withLock { $0 } == "GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(try setup.written().isEmpty)
        _ = try setup.channel.finish(acceptAlreadyClosed: true)
    }

    @Test("no complete request line within the handshake timeout: closed")
    func deadline() throws {
        let setup = try Setup(handshakeTimeoutMs: 500)
        try setup.send("GET /peerjs/peer")
        setup.loop.advanceTime(by: .milliseconds(499))
        #expect(setup.channel.isActive)
        setup.loop.advanceTime(by: .milliseconds(1))
        #expect(!setup.channel.isActive, "a client that never finished its line holds the connection")
        #expect(setup.decided == nil)
    }

    @Test("a half-close before the line: closed; a line longer than the header limit goes to the app (its parser refuses it)")
    func halfCloseAndLongLine() throws {
        let closing = try Setup()
        try closing.send("GET /")
        closing.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!closing.channel.isActive)

        let long = try Setup(maxHeaderBytes: 1024)
        try long.send("GET /peerjs/" + String(repeating: "a", count: 1100))
        guard case .other = long.decided else { Issue.record("route: \(String(describing: long.decided))"); return }
        #expect(long.app.received.withLock { $0.utf8.count } == 1112)
        _ = try long.channel.finish(acceptAlreadyClosed: true)
    }

    @Test("serve() refuses a channel on another loop than the server's")
    func otherLoop() throws {
        let setup = try Setup()
        let elsewhere = EmbeddedChannel(loop: EmbeddedEventLoop())
        #expect(throws: PeerJSServerError.self) { try setup.server.serve(elsewhere) }
        _ = try setup.channel.finish(acceptAlreadyClosed: true)
    }
}
