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
        /// What reached the app, in order: `read`, `readComplete`, `inactive`.
        let seen = Mutex<[String]>([])

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            received.withLock { $0 += String(buffer: bytes) }
            seen.withLock { $0.append("read") }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            seen.withLock { $0.append("readComplete") }
        }
    }

    struct Setup {
        let loop = EmbeddedEventLoop()
        let server: PeerJSServer
        let channel: EmbeddedChannel
        let app = AppSide()
        let route: EventLoopFuture<PeerJSServer.Route<String>>

        /// With `appLater`, the app's pipeline is ready when the test completes `appReady`.
        let appReady: EventLoopPromise<Void>?

        init(handshakeTimeoutMs: Int64 = 1000, maxHeaderBytes: Int = 4096, appLater: Bool = false) throws {
            let appReady = appLater ? loop.makePromise(of: Void.self) : nil
            self.appReady = appReady
            server = try PeerJSServer(
                configuration: .init(path: "/peerjs", handshakeTimeoutMs: handshakeTimeoutMs, maxHeaderBytes: maxHeaderBytes),
                eventLoop: loop, logger: MountedApp.quiet)
            loop.run()
            channel = EmbeddedChannel(loop: loop)
            let app = self.app
            route = server.mount(channel) { channel in
                let ready = appReady?.futureResult ?? channel.eventLoop.makeSucceededVoidFuture()
                return ready.flatMapThrowing {
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

    @Test("a half-close before the line: closed; an over-long line for the app's paths goes to the app")
    func halfCloseAndLongLine() throws {
        let closing = try Setup()
        try closing.send("GET /")
        closing.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!closing.channel.isActive)

        let long = try Setup(maxHeaderBytes: 1024)
        try long.send("GET /app/" + String(repeating: "a", count: 1100))
        guard case .other = long.decided else { Issue.record("route: \(String(describing: long.decided))"); return }
        #expect(long.app.received.withLock { $0.utf8.count } == 1109)
        _ = try long.channel.finish(acceptAlreadyClosed: true)
    }

    @Test("an app pipeline that is ready later gets the bytes and a read-complete (NIO's async channels wait for it)")
    func laterApp() throws {
        let setup = try Setup(appLater: true)
        try setup.send("GET / HTTP/1.1\r\n")
        try setup.send("Host: h\r\n\r\n")
        #expect(setup.decided == nil, "decided before the app's pipeline was ready")
        setup.appReady?.succeed(())
        setup.loop.run()
        guard case .other = setup.decided else { Issue.record("route: \(String(describing: setup.decided))"); return }
        #expect(setup.app.received.withLock { $0 } == "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(setup.app.seen.withLock { $0 } == ["read", "readComplete"])
        _ = try setup.channel.finish(acceptAlreadyClosed: true)
    }

    @Test("leading empty lines are skipped, even a byte at a time; absolute-form goes to the app; an over-long line under the base path is PeerJS's (431)")
    func targets() throws {
        let absolute = try Setup()
        try absolute.send("GET http://example.test:8080/peerjs/peerjs/id HTTP/1.1\r\nHost: h\r\n\r\n")
        guard case .other = absolute.decided else { Issue.record("absolute: \(String(describing: absolute.decided))"); return }

        let leading = try Setup()
        try leading.send("\r\n\r\nGET /peerjs HTTP/1.1\r\nHost: h\r\n\r\n")
        guard case .peerJS = leading.decided else { Issue.record("leading: \(String(describing: leading.decided))"); return }

        let dribble = try Setup()
        for _ in 0..<1000 { try dribble.send("\r") }
        #expect(dribble.decided == nil)
        try dribble.send("\nGET /peerjs/peerjs/id HTTP/1.1\r\nHost: h\r\n\r\n")
        guard case .peerJS = dribble.decided else { Issue.record("dribble: \(String(describing: dribble.decided))"); return }
        #expect(try dribble.written().hasPrefix("HTTP/1.1 200 OK"))
        _ = try dribble.channel.finish(acceptAlreadyClosed: true)

        let long = try Setup(maxHeaderBytes: 1024)
        try long.send("GET /peerjs/" + String(repeating: "a", count: 1100))
        guard case .peerJS = long.decided else { Issue.record("long: \(String(describing: long.decided))"); return }
        #expect(try long.written().hasPrefix("HTTP/1.1 431"))
        for setup in [absolute, leading, long] { _ = try? setup.channel.finish(acceptAlreadyClosed: true) }
    }

    @Test("an app pipeline that becomes ready after the connection ended is not given it; an error before the decision closes")
    func lateOrBroken() throws {
        let late = try Setup(appLater: true)
        try late.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        try late.channel.close().wait()
        late.appReady?.succeed(())
        late.loop.run()
        #expect(late.decided == nil)
        #expect(late.app.seen.withLock { $0 }.isEmpty, "the app saw a connection that had ended")

        let broken = try Setup()
        try broken.send("GET /pe")
        broken.channel.pipeline.fireErrorCaught(ChannelError.connectTimeout(.seconds(1)))
        #expect(!broken.channel.isActive)
    }

    @Test("a connection that ends before its first line fails the route; mount refuses a base path of /")
    func endsEarly() throws {
        let setup = try Setup()
        try setup.send("GET /pe")
        try setup.channel.close().wait()
        let failed = Mutex(false)
        setup.route.whenFailure { _ in failed.withLock { $0 = true } }
        #expect(failed.withLock { $0 })

        let loop = EmbeddedEventLoop()
        let everything = try PeerJSServer(configuration: .init(path: "/"), eventLoop: loop, logger: MountedApp.quiet)
        let refused = Mutex(false)
        everything.mount(EmbeddedChannel(loop: loop)) { $0.eventLoop.makeSucceededFuture(0) }.whenFailure { _ in refused.withLock { $0 = true } }
        #expect(refused.withLock { $0 }, "a base path of / would take every request from the app")
    }

    @Test("a configuration outside the daemon's ranges is refused by name")
    func configuration() {
        #expect(throws: PeerJSServerError.self) { try PeerJSServer(configuration: .init(handshakeTimeoutMs: Int64.max)) }
        #expect(throws: PeerJSServerError.self) { try PeerJSServer(configuration: .init(maxMessageBytes: 1 << 30)) }
        #expect(throws: PeerJSServerError.self) { try PeerJSServer(configuration: .init(protocolSettings: .init(keys: []))) }
        for path in ["//evil.example", "/a?b", "/a b", "/a%2f"] {
            #expect(throws: PeerJSServerError.self, "\(path)") { try PeerJSServer(configuration: .init(path: path)) }
        }
        #expect(throws: PeerJSServerError.self) { try PeerJSServer(configuration: .init(trustedProxies: ["proxy.example"])) }
        #expect(PeerJSServer.Configuration(path: "/peerjs").problem == nil)
    }

    @Test("serve() refuses a channel on another loop than the server's")
    func otherLoop() throws {
        let setup = try Setup()
        let elsewhere = EmbeddedChannel(loop: EmbeddedEventLoop())
        #expect(throws: PeerJSServerError.self) { try setup.server.serve(elsewhere) }
        _ = try setup.channel.finish(acceptAlreadyClosed: true)
    }
}
