import NIOCore
import NIOEmbedded
import PeerProtocol
import Testing

@testable import Broker

/// The HTTP routes of PROTOCOL.md §4 through the whole connection pipeline (the handshake
/// handler hands every plain request to NIO's HTTP pipeline and ``HTTPRouteHandler``).
@Suite("HTTP routes (PROTOCOL.md §4)")
struct HTTPRouteTests {
    /// The response to one request on a fresh connection to `broker`: status line, headers, body.
    static func respond(
        _ request: String, broker: TestBroker = TestBroker()
    ) throws -> (status: String, headers: [String], body: String) {
        let rig = try #require(try broker.connect())
        rig.held.holding = false
        try rig.send(request)
        let text = try rig.written()
        let parts = text.split(separator: "\r\n\r\n", maxSplits: 1, omittingEmptySubsequences: false)
        let head = parts[0].split(separator: "\r\n").map(String.init)
        _ = try rig.channel.finish(acceptAlreadyClosed: true)
        return (head[0], Array(head.dropFirst()), parts.count > 1 ? String(parts[1]) : "")
    }

    static func get(_ path: String, _ headers: String = "", broker: TestBroker = TestBroker()) throws
        -> (status: String, headers: [String], body: String)
    {
        try respond("GET \(path) HTTP/1.1\r\nHost: h\r\n\(headers)\r\n", broker: broker)
    }

    static func broker(path: String = "/", discovery: Bool = false, cors: [String] = []) -> TestBroker {
        TestBroker(BrokerConfiguration(protocolSettings: ProtocolSettings(allowDiscovery: discovery), path: path, corsOrigins: cors))
    }

    @Test("GET {path} answers the server's description as JSON")
    func root() throws {
        let response = try Self.get("/")
        #expect(response.status == "HTTP/1.1 200 OK")
        #expect(response.body == ProtocolText.serverInfo)
        #expect(response.headers.contains("Content-Type: application/json; charset=utf-8"))
        #expect(try Self.get("/myapp", broker: Self.broker(path: "myapp")).body == ProtocolText.serverInfo, "without the slash")
        #expect(try Self.get("/", broker: Self.broker(path: "myapp")).status == "HTTP/1.1 404 Not Found")
    }

    @Test("GET {path}{key}/id answers a fresh UUID; an unknown key gets 401 Invalid key provided")
    func id() throws {
        let response = try Self.get("/peerjs/id")
        #expect(response.status == "HTTP/1.1 200 OK")
        #expect(response.body.utf8.count == 36 && response.body.split(separator: "-").count == 5, "\(response.body)")
        #expect(response.headers.contains("Content-Type: text/html; charset=utf-8"))
        let wrong = try Self.get("/other/id")
        #expect(wrong.status == "HTTP/1.1 401 Unauthorized")
        #expect(wrong.body == ProtocolText.invalidKey)
    }

    @Test("GET {key}/peers is 401 Unauthorized without discovery, the realm's ids with it")
    func peers() throws {
        let closed = try Self.get("/peerjs/peers")
        #expect(closed.status == "HTTP/1.1 401 Unauthorized")
        #expect(closed.body == ProtocolText.unauthorized)
        let open = Self.broker(discovery: true)
        _ = try open.peer("alice")
        #expect(try Self.get("/peerjs/peers", broker: open).body == #"["alice"]"#)
    }

    @Test("unknown paths and methods get 404 Not Found; HEAD gets the headers without the body")
    func notFound() throws {
        for request in ["GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n", "POST / HTTP/1.1\r\nHost: h\r\n\r\n",
                        "GET /peerjs/id/more HTTP/1.1\r\nHost: h\r\n\r\n"] {
            let response = try Self.respond(request)
            #expect(response.status == "HTTP/1.1 404 Not Found", "\(request)")
            #expect(response.body == ProtocolText.notFound)
        }
        let head = try Self.respond("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(head.status == "HTTP/1.1 200 OK")
        #expect(head.headers.contains("Content-Length: \(ProtocolText.serverInfo.utf8.count)"))
        #expect(head.body.isEmpty)
    }

    @Test("CORS: the origin is echoed (any, or only a listed one); OPTIONS answers the pre-flight with 204")
    func cors() throws {
        #expect(try Self.get("/", "Origin: https://a.example\r\n").headers.contains("Access-Control-Allow-Origin: https://a.example"))
        let listed = Self.broker(cors: ["https://a.example"])
        #expect(try Self.get("/", "Origin: https://a.example\r\n", broker: listed).headers.contains("Access-Control-Allow-Origin: https://a.example"))
        #expect(!(try Self.get("/", "Origin: https://b.example\r\n", broker: listed).headers.contains { $0.hasPrefix("Access-Control-Allow-Origin") }))
        let preflight = try Self.respond(
            "OPTIONS /peerjs/id HTTP/1.1\r\nHost: h\r\nOrigin: https://a.example\r\nAccess-Control-Request-Headers: x-thing\r\n\r\n")
        #expect(preflight.status == "HTTP/1.1 204 No Content")
        #expect(preflight.headers.contains("Access-Control-Allow-Methods: GET,HEAD,PUT,PATCH,POST,DELETE"))
        #expect(preflight.headers.contains("Access-Control-Allow-Headers: x-thing"))
    }

    @Test("a WebSocket upgrade on another path than {path}peerjs is 400 Bad Request and the connection closes")
    func upgradeElsewhere() throws {
        let rig = try #require(try TestBroker().connect())
        rig.held.holding = false
        try rig.send(upgradeRequest("key=peerjs&id=a&token=t", path: "/elsewhere"))
        rig.loop.run()
        let response = try rig.written()
        #expect(response.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(response)")
        #expect(response.hasSuffix(ProtocolText.badRequest))
        #expect(!rig.channel.isActive)
    }
}

/// Mounted in an app (PeerJSKit), the broker answers only its base path; the app's paths on a
/// connection it holds are sent back to a new connection.
@Suite("HTTP routes mounted in an app (BrokerConfiguration.mounted)")
struct MountedRouteTests {
    static func broker() -> TestBroker {
        TestBroker(BrokerConfiguration(path: "/peerjs", handshakeTimeoutMs: Rig.timeoutMs, maxHeaderBytes: 4096, mounted: true))
    }

    @Test("a request outside the base path gets 307 to itself with Connection: close; the base path is served")
    func redirect() throws {
        let broker = Self.broker()
        let own = try HTTPRouteTests.get("/peerjs/peerjs/id", broker: broker)
        #expect(own.status == "HTTP/1.1 200 OK")
        let other = try HTTPRouteTests.get("/index.html?x=1", broker: broker)
        #expect(other.status == "HTTP/1.1 307 Temporary Redirect")
        #expect(other.headers.contains("Location: /index.html?x=1"))
        #expect(other.headers.contains("Connection: close"))
        #expect(try HTTPRouteTests.get("/peerjs", broker: broker).body == ProtocolText.serverInfo)
        #expect(try HTTPRouteTests.get("/peerjsx", broker: broker).status == "HTTP/1.1 307 Temporary Redirect",
                "a sibling path is the app's")
        // Not mounted (the daemon): the same request is a 404 as before.
        #expect(try HTTPRouteTests.get("/index.html", broker: HTTPRouteTests.broker(path: "/peerjs")).status == "HTTP/1.1 404 Not Found")
    }

    @Test("on a keep-alive connection the 307 comes after the response before it, and nothing after it is answered")
    func order() throws {
        let rig = try #require(try Self.broker().connect())
        rig.held.holding = false
        try rig.send("GET /peerjs/peerjs/id HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\nGET /peerjs/peerjs/id HTTP/1.1\r\nHost: h\r\n\r\n")
        rig.loop.run()
        let text = try rig.written()
        // Bodies end without a line break: the status lines are found in the text as it is.
        let statuses = text.ranges(of: "HTTP/1.1 ").map { text[$0.lowerBound...].prefix(while: { $0 != "\r\n" }) }
        #expect(statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 307 Temporary Redirect"], "\(text)")
        _ = try rig.channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a serves(target:) rule: the base path with or without its slash, and anything under it")
    func rule() {
        let configuration = BrokerConfiguration(path: "/peerjs")
        #expect(configuration.serves(target: "/peerjs"))
        #expect(configuration.serves(target: "/peerjs/"))
        #expect(configuration.serves(target: "/peerjs?x"))
        #expect(configuration.serves(target: "/peerjs/peerjs?key=peerjs&id=a"))
        #expect(!configuration.serves(target: "/peerjsx"))
        #expect(!configuration.serves(target: "/"))
        #expect(!configuration.serves(target: "/other/peerjs/"))
        #expect(BrokerConfiguration(path: "/").serves(target: "/anything"))
    }
}

@Suite("Mounted: bodies, other hosts, the configuration's ranges, the in-process auth link")
struct MountedEdgeTests {
    @Test("a request with a body for the app's paths gets its 307 at the head, without waiting for the body")
    func bodyRedirectedAtHead() throws {
        let rig = try #require(try MountedRouteTests.broker().connect())
        rig.held.holding = false
        // EmbeddedChannel closes fully on .output: NIO's decoder then reports the body it never got.
        _ = try? rig.send("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\nfirst bytes of a large body")
        rig.loop.run()
        let text = try rig.written()
        #expect(text.hasPrefix("HTTP/1.1 307 Temporary Redirect"), "\(text)")
        #expect(text.contains("Location: /upload"))
        _ = try? rig.channel.finish(acceptAlreadyClosed: true)  // NIO's decoder: the body never ended
    }

    @Test("a target a browser would read as another host (//host, backslashes) gets 400, never a Location")
    func noOpenRedirect() throws {
        for target in ["//evil.example/x", "/\\evil.example", "/a\\b"] {
            let response = try HTTPRouteTests.get(target, broker: MountedRouteTests.broker())
            #expect(response.status == "HTTP/1.1 400 Bad Request", "\(target)")
            #expect(!response.headers.contains { $0.lowercased().hasPrefix("location") }, "\(target)")
        }
        #expect(HTTPRouteHandler.isOriginForm("/index.html?x=//y"))
    }

    @Test("the configuration's ranges are the daemon's flags' ranges")
    func problems() {
        #expect(BrokerConfiguration().problem == nil)
        #expect(BrokerConfiguration(handshakeTimeoutMs: 0).problem?.contains("handshakeTimeoutMs") == true)
        #expect(BrokerConfiguration(outputLimit: 10).problem?.contains("outputLimit") == true)
        #expect(BrokerConfiguration(authTimeoutMs: 60_001).problem?.contains("authTimeoutMs") == true)
        #expect(BrokerConfiguration(protocolSettings: ProtocolSettings(takeoverTimeoutMs: -1)).problem?.contains("takeoverTimeoutMs") == true)
    }

    @Test("a deny reason is cut at 256 UTF-8 bytes on a character boundary")
    func truncation() {
        let text = String(repeating: "é", count: 200)  // 400 bytes
        let cut = InProcessAuthLink.truncated(text, toBytes: 256)
        #expect(cut.utf8.count == 256 && cut == String(repeating: "é", count: 128))
        #expect(InProcessAuthLink.truncated("short", toBytes: 256) == "short")
    }
}
