import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOPosix
import PeerJSHummingbird
import PeerJSKit
import PeerJSTesting
import Testing

/// A Hummingbird app with a page at `/` and ``PeerJSServer`` mounted at `/peerjs`, on a live
/// server (127.0.0.1, a free port) driven by Hummingbird's test client and real WebSocket clients.
struct MountedApp {
    static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    static let page = "<!doctype html><title>the app</title>"
    let server: PeerJSServer
    let app: Application<RouterResponder<BasicRequestContext>>

    init(
        _ configuration: PeerJSServer.Configuration = .init(protocolSettings: .init(allowDiscovery: true), path: "/peerjs"),
        authorize: (@Sendable (PeerJSServer.Registration) async -> PeerJSServer.Verdict)? = nil
    ) throws {
        // One of NIO's shared loops (tests running at once may share one; each has its own server).
        server = try PeerJSServer(configuration: configuration, eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                                  logger: Self.quiet, authorize: authorize)
        let router = Router()
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html"], body: .init(byteBuffer: ByteBuffer(string: Self.page)))
        }
        app = Application(
            router: router, server: .peerJS(server),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            eventLoopGroupProvider: .shared(server.eventLoop), logger: Self.quiet)
    }

    /// Runs `body` against the live app; the app shuts down gracefully after it.
    func live<Value: Sendable>(_ body: @Sendable (_ client: any TestClientProtocol, _ port: Int) async throws -> Value) async throws -> Value {
        try await app.test(.live) { client in
            let port = try #require(client.port)
            return try await body(client, port)
        }
    }
}

/// The first `count` events of `server`, waiting at most `timeout` for them.
func firstEvents(_ server: PeerJSServer, count: Int, timeout: Duration = .seconds(5)) async throws -> [PeerEvent] {
    let events = server.events
    return try await withThrowingTaskGroup(of: [PeerEvent].self) { group in
        group.addTask {
            var seen: [PeerEvent] = []
            for await event in events {
                seen.append(event)
                if seen.count == count { break }
            }
            return seen
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw HarnessError("fewer than \(count) PeerJSServer events within \(timeout)")
        }
        defer { group.cancelAll() }
        return try await group.next() ?? []
    }
}

@Suite("PeerJSKit mounted in Hummingbird (issue 19)")
struct HummingbirdMountTests {
    @Test("the app's page at /, and the PeerJS routes under /peerjs, through Hummingbird's test client")
    func routes() async throws {
        let mounted = try MountedApp()
        try await mounted.live { client, _ in
            try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == MountedApp.page)
            }
        }
        try await mounted.live { client, _ in
            try await client.execute(uri: "/peerjs", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == ProtocolText.serverInfo)
            }
            // The same keep-alive connection, now the PeerJS server's: its routes go on.
            try await client.execute(uri: "/peerjs/peerjs/id", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).utf8.count == 36)
            }
            try await client.execute(uri: "/peerjs/other/id", method: .get) { response in
                #expect(response.status == .unauthorized)
                #expect(String(buffer: response.body) == ProtocolText.invalidKey)
            }
            try await client.execute(uri: "/peerjs/peerjs/peers", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == "[]")
            }
            // The app's page on this connection: sent to a new one (last: the connection closes).
            try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .temporaryRedirect)
                #expect(response.headers[.location] == "/")
                #expect(response.headers[.connection] == "close")
            }
        }
    }

    @Test("a keep-alive connection of the app that asks for /peerjs/… gets 307 with Connection: close")
    func appSideRedirect() async throws {
        let mounted = try MountedApp()
        try await mounted.live { client, _ in
            try await client.execute(uri: "/", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/peerjs/peerjs/id?ts=1", method: .get) { response in
                #expect(response.status == .temporaryRedirect)
                #expect(response.headers[.location] == "/peerjs/peerjs/id?ts=1")
                #expect(response.headers[.connection] == "close")
            }
        }
    }

    @Test("two PeerJS clients register at /peerjs/peerjs and relay an OFFER; the events say connection and disconnect")
    func relayAndEvents() async throws {
        let mounted = try MountedApp()
        try await mounted.live { _, port in
            let alice = try await WSClient.connect(port: port, path: "/peerjs/peerjs", query: "key=peerjs&id=alice&token=a")
            #expect(try await alice.nextJSON()["type"] == .string("OPEN"))
            let bob = try await WSClient.connect(port: port, path: "/peerjs/peerjs", query: "key=peerjs&id=bob&token=b")
            #expect(try await bob.nextJSON()["type"] == .string("OPEN"))
            try await alice.sendText(#"{"type":"OFFER","dst":"bob","payload":{"sdp":"x"}}"#)
            let offer = try await bob.nextJSON()
            #expect(offer["type"] == .string("OFFER") && offer["src"] == .string("alice"))
            let peers = try await HTTPClient.get(port: port, "/peerjs/peerjs/peers")
            #expect(try peers.json().arrayValue?.compactMap(\.stringValue).sorted() == ["alice", "bob"])
            await alice.close()
        }
        let seen = try await firstEvents(mounted.server, count: 3)
        guard case .connected("alice", "peerjs", _, "127.0.0.1") = seen[0], case .connected("bob", "peerjs", _, _) = seen[1],
              case .disconnected("alice", "peerjs", _, _, .closed) = seen[2]
        else {
            Issue.record("events: \(seen)")
            return
        }
    }

    @Test("the auth hook: allow → OPEN, deny → ERROR with its reason; a hook slower than authTimeoutMs → Auth Timeout")
    func authHook() async throws {
        let gate = Gate()
        // The deadline only has to outlast a hook that answers at once on a loaded machine; the
        // "slow" hook waits for the gate, which opens after the test.
        let mounted = try MountedApp(.init(path: "/peerjs", authTimeoutMs: 3000)) { registration in
            switch registration.id {
            case "slow": await gate.wait(); return .allow
            case let id where id.hasPrefix("admin"): return .deny(reason: "reserved: \(registration.ip)")
            default: return registration.token == "secret" ? .allow : .deny(reason: "")
            }
        }
        try await mounted.live { _, port in
            let allowed = try await WSClient.connect(port: port, path: "/peerjs/peerjs", query: "key=peerjs&id=carol&token=secret")
            #expect(try await allowed.nextJSON()["type"] == .string("OPEN"))
            for (id, token, text) in [("admin1", "secret", "reserved: 127.0.0.1"), ("dave", "wrong", ProtocolText.authFailed), ("slow", "secret", ProtocolText.authTimeout)] {
                let refused = try await WSClient.connect(port: port, path: "/peerjs/peerjs", query: "key=peerjs&id=\(id)&token=\(token)")
                let error = try await refused.nextJSON()
                #expect(error["type"] == .string("ERROR") && error["payload"]?["msg"] == .string(text), "\(id): \(error)")
                _ = try await refused.waitForClose()
            }
            await allowed.close()
        }
        await gate.open()
    }

    @Test("Hummingbird's graceful shutdown closes a PeerJS socket with 1001 going away")
    func gracefulShutdown() async throws {
        let mounted = try MountedApp()
        let client = try await mounted.live { _, port in
            let client = try await WSClient.connect(port: port, path: "/peerjs/peerjs", query: "key=peerjs&id=erin&token=e")
            #expect(try await client.nextJSON()["type"] == .string("OPEN"))
            return client
        }
        let close = try await client.waitForClose()
        #expect(close.code == 1001, "\(close)")
    }
}

/// Holds auth hooks until the test opens it (a hook that outlives its deadline, then ends).
actor Gate {
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var isOpen = false

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters.removeAll()
    }
}
