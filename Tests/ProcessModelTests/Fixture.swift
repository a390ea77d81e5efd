// End-to-end tests of the real `peerjs` binary over 127.0.0.1, one @Test per behaviour of PROTOCOL.md §11
// (numbered in the test names), as amended by §13/§14 and the project decisions noted at each test.
//
// Run:   swift build --build-tests && swift test --skip-build --filter ProcessModelTests
// Env:   PEERJS_BINARY     the binary to test (default: `peerjs` next to the test bundle)
//        PEERJS_TEST_URL   run the protocol suite against an external server (e.g. http://127.0.0.1:9000/,
//                          started with --allow_discovery); suites needing their own flags or processes are skipped
//        PEERJS_TEST_KEY   the external server's key (default peerjs)
//        PEERJS_TEST_LOGS  print every spawned server's whole output at the end of its suite
//        PEERJS_TEST_ECHO  echo server output live to stderr, prefixed "[peerjs] "
// Suites sharing flags share one server; tests run in parallel and use random ids (Unique.id).

import Foundation
import PeerJSTesting
import Testing

/// Where the tests of one suite find their server: a process started for the suite, or an external server named by
/// `PEERJS_TEST_URL` (e.g. `http://127.0.0.1:9000/`; key from `PEERJS_TEST_KEY`, default `peerjs`). An external
/// server must run with `--allow_discovery` for the protocol suite.
struct Endpoint: Sendable {
    let host: String
    let port: Int
    /// Base path `B` (starts and ends with `/`).
    let basePath: String
    let key: String
    /// The spawned server, `nil` for an external one.
    let server: ServerProcess?
    /// The flags of the suite trait that made this endpoint (nested suites with the same flags share it).
    let arguments: [String]

    var wsPath: String { basePath + "peerjs" }

    /// The endpoint of the suite being run.
    static func current() throws -> Endpoint {
        try #require(ServerFixture.current, "this suite has no server: add the .peerServer(…) trait")
    }

    /// Opens a WebSocket at `B peerjs` with the raw query.
    /// `timeout`: for TCP connect plus the 101, which waits for a takeover's decision (TakeoverTests).
    func connect(query: String?, autoPong: Bool = true, timeout: Duration = .seconds(5)) async throws -> WSClient {
        try await WSClient.connect(host: host, port: port, path: wsPath, query: query, autoPong: autoPong, timeout: timeout)
    }

    /// Opens a WebSocket with `key`/`id`/`token` (each inserted raw, unencoded, as the browser client does).
    func connect(
        id: String,
        token: String,
        key: String? = nil,
        extra: String = "",
        autoPong: Bool = true,
        timeout: Duration = .seconds(5)
    ) async throws
        -> WSClient
    {
        try await connect(query: "key=\(key ?? self.key)&id=\(id)&token=\(token)\(extra)", autoPong: autoPong, timeout: timeout)
    }

    /// Registers a new peer with a unique id and expects exactly `{"type":"OPEN"}` first.
    func register(
        _ prefix: String = "p",
        id: String? = nil,
        token: String? = nil,
        autoPong: Bool = true
    ) async throws
        -> Peer
    {
        let id = id ?? Unique.id(prefix)
        let token = token ?? Unique.token()
        let ws = try await connect(id: id, token: token, autoPong: autoPong)
        let first = try await ws.nextJSON()
        guard first == ["type": "OPEN"] else {
            throw HarnessError("registering \(id): expected {\"type\":\"OPEN\"}, got \(first)")
        }
        return Peer(id: id, token: token, ws: ws)
    }

    /// `GET B + relative`.
    func get(_ relative: String, headers: [(String, String)] = []) async throws -> HTTPResponse {
        try await HTTPClient.request("GET", host: host, port: port, path: basePath + relative, headers: headers)
    }

    /// The ids listed by `GET B{key}/peers` (requires `--allow_discovery`).
    func listedPeers() async throws -> Set<String> {
        let response = try await get("\(key)/peers")
        guard response.status == 200, let ids = try response.json().arrayValue else {
            throw HarnessError("GET \(key)/peers: \(response)")
        }
        return Set(ids.compactMap(\.stringValue))
    }

    /// Polls `/peers` until `condition` holds for the listed ids (bounded); returns whether it did.
    func waitForPeers(timeout: Duration = .seconds(3), _ condition: (Set<String>) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if condition(try await listedPeers()) { return true }
            if ContinuousClock.now >= deadline { return false }
            try await Task.sleep(for: .milliseconds(25))
        }
    }

    /// A robustness check after bad input: two new clients register and relay an OFFER; the survivor (if given)
    /// still receives relays, and the broker process was not replaced (a restart would hide a crash).
    func expectStillServing(survivor: Peer? = nil, brokerBefore: Int32? = nil) async throws {
        let x = try await register("hx")
        let y = try await register("hy")
        defer {
            Task {
                await x.ws.close()
                await y.ws.close()
            }
        }
        try await x.send(type: "OFFER", to: y.id, payload: ["sdp": "healthy"])
        let got = try await y.ws.nextJSON()
        #expect(got == ["type": "OFFER", "src": .string(x.id), "dst": .string(y.id), "payload": ["sdp": "healthy"]])
        if let survivor {
            try await x.send(type: "OFFER", to: survivor.id, payload: ["still": "here"])
            let relayed = try await survivor.ws.nextJSON()
            #expect(relayed["src"] == .string(x.id), "a peer connected before the bad input must keep its connection")
        }
        if let brokerBefore, let server {
            #expect(server.brokerPID() == brokerBefore, "the broker was replaced: bad input from one client crashed it")
        }
    }
}

/// A registered peer in a test.
struct Peer: Sendable {
    let id: String
    let token: String
    let ws: WSClient

    /// Sends `{type, dst, payload}` (fields omitted when `nil`).
    func send(type: String, to dst: String?, payload: JSONValue? = nil) async throws {
        var message: [String: JSONValue] = ["type": .string(type)]
        if let dst { message["dst"] = .string(dst) }
        if let payload { message["payload"] = payload }
        try await ws.sendJSON(.object(message))
    }

    func heartbeat() async throws {
        try await ws.sendJSON(["type": "HEARTBEAT"])
    }
}

/// Binds the suite's server for its tests (task-local, so parallel tests of one suite share it).
enum ServerFixture {
    @TaskLocal static var current: Endpoint?

    /// The external server, when `PEERJS_TEST_URL` is set.
    static var externalURL: URL? {
        guard let text = ProcessInfo.processInfo.environment["PEERJS_TEST_URL"], !text.isEmpty else { return nil }
        return URL(string: text)
    }

    static var isExternal: Bool { externalURL != nil }

    static func external(_ url: URL, arguments: [String]) -> Endpoint {
        Endpoint(
            host: url.host ?? "127.0.0.1",
            port: url.port ?? 9000,
            basePath: normalizeBasePath(url.path),
            key: ProcessInfo.processInfo.environment["PEERJS_TEST_KEY"] ?? "peerjs",
            server: nil,
            arguments: arguments
        )
    }
}

/// Suite trait: one `peerjs` process per suite, started with `arguments` (plus `--host 127.0.0.1 --port 0`),
/// stopped when the suite ends. Its output is printed when a test of the suite records an issue or throws, and
/// always when `PEERJS_TEST_LOGS` is set.
struct PeerServerTrait: SuiteTrait, TestTrait, TestScoping {
    let arguments: [String]
    /// Whether the suite may run against `PEERJS_TEST_URL` instead (it needs no special flags).
    let allowsExternal: Bool

    var isRecursive: Bool { true }

    func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        if test.isSuite { return testCase == nil ? self : nil }
        return testCase != nil ? self : nil
    }

    func provideScope(
        for test: Test,
        testCase: Test.Case?,
        performing function: @Sendable () async throws -> Void
    ) async throws {
        if test.isSuite {
            if let inherited = ServerFixture.current, inherited.arguments == arguments {
                try await function()  // a nested suite: share the enclosing suite's server
                return
            }
            if let url = ServerFixture.externalURL {
                guard allowsExternal else { return }  // such suites are also .disabled(if: isExternal)
                try await ServerFixture.$current.withValue(ServerFixture.external(url, arguments: arguments)) {
                    try await function()
                }
                return
            }
            let server = try await ServerProcess.launch(arguments)
            let endpoint = Endpoint(
                host: server.host,
                port: server.port,
                basePath: server.basePath,
                key: server.key,
                server: server,
                arguments: arguments
            )
            do {
                try await ServerFixture.$current.withValue(endpoint) { try await function() }
            } catch {
                server.printLog(header: "peerjs output, suite \(test.name) (\(error))")
                await server.stop()
                throw error
            }
            if ProcessInfo.processInfo.environment["PEERJS_TEST_LOGS"] != nil {
                server.printLog(header: "peerjs output, suite \(test.name)", limit: 100_000)
            }
            // A broker crash is hidden by the supervisor's restart; catch it here for the whole suite.
            let starts = server.logLines.filter { $0.contains("broker started") }.count
            let supervisorAlive = ServerProcess.isAlive(server.pid)
            let status = await server.stop()
            if starts > 1 || !supervisorAlive {
                server.printLog(header: "peerjs output, suite \(test.name)")
                Issue.record(
                    "during suite \(test.name) the broker was started \(starts) times (a test crashed it) or the supervisor died (alive: \(supervisorAlive))"
                )
            }
            if status == .signaled(SIGKILL) {
                Issue.record("peerjs did not stop within 5 s of SIGTERM at the end of suite \(test.name)")
            }
            return
        }
        // One test: print the server's output once if the test records an issue or throws.
        let server = ServerFixture.current?.server
        let printed = PrintOnce()
        let name = test.name
        let observer = IssueHandlingTrait.compactMapIssues { issue in
            if let server, printed.first() { server.printLog(header: "peerjs output at failure of \(name)", limit: 80) }
            return issue
        }
        do {
            try await observer.provideScope(for: test, testCase: testCase, performing: function)
        } catch {
            if let server, printed.first() { server.printLog(header: "peerjs output at failure of \(name)", limit: 80) }
            throw error
        }
    }
}

final class PrintOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false

    func first() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if done { return false }
        done = true
        return true
    }
}

extension Trait where Self == PeerServerTrait {
    /// One `peerjs` for the suite, with these flags. `allowsExternal`: may use `PEERJS_TEST_URL` instead.
    static func peerServer(_ arguments: String..., allowsExternal: Bool = false) -> Self {
        PeerServerTrait(arguments: arguments, allowsExternal: allowsExternal)
    }
}

/// Reason used by suites that need their own process with special flags.
let needsOwnServer: Comment = "needs its own peerjs process with special flags; skipped because PEERJS_TEST_URL is set"

/// A typical OFFER payload from the 1.x client (opaque to the server).
let offerPayload: JSONValue = [
    "sdp": ["type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"],
    "type": "data", "connectionId": "dc_k2j3h4", "label": "dc_k2j3h4", "reliable": false, "serialization": "binary",
    "metadata": ["n": 1.5, "list": [1, "two", nil, true], "unicode": "héllo ✓"],
]
