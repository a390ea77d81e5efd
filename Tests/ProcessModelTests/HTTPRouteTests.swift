import Foundation
import PeerJSTesting
import Testing

/// The protocol tests that need nothing but `--allow_discovery` share one server (or `PEERJS_TEST_URL`).
/// Nested suites in other files extend this type.
// --takeover-timeout 10000: behaviour 19's owner answers the takeover's ping at once, and ID-TAKEN
// follows; the default 2 s deadline is tested in TakeoverTests. With it here, a CI machine that
// stalls the owner's pong for 2 s (seen at load 5 on 2 cores) would hand its id over instead.
@Suite(
    "PeerJS protocol, shared server (--allow_discovery)",
    .peerServer("--allow_discovery", "--takeover-timeout", "10000", allowsExternal: true))
struct SharedServer {}

private func isUUIDv4(_ text: String) -> Bool {
    text.wholeMatch(of: #/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/#) != nil
}

extension SharedServer {
    @Suite("HTTP routes")
    struct HTTPRoutes {
        @Test("1 GET B answers 200 with exactly name, description, website")
        func info() async throws {
            let s = try Endpoint.current()
            let response = try await s.get("")
            #expect(response.status == 200)
            let body = try response.json()
            #expect(
                body == [
                    "name": "PeerJS Server",
                    "description": "A server side element to broker connections between PeerJS clients.",
                    "website": "https://peerjs.com/",
                ]
            )
        }

        @Test("2 GET B{key}/id answers text/html with a fresh UUID v4")
        func newID() async throws {
            let s = try Endpoint.current()
            let first = try await s.get("\(s.key)/id")
            let second = try await s.get("\(s.key)/id")
            #expect(first.status == 200)
            #expect(first.header("Content-Type")?.lowercased().hasPrefix("text/html") == true, "\(first)")
            #expect(isUUIDv4(first.text), "not a lower-case UUID v4: \(first.text)")
            #expect(isUUIDv4(second.text))
            #expect(first.text != second.text)
        }

        @Test("3 GET B{key}/id?ts=123&version=1.5.4 with the configured key answers an id (query ignored)")
        func newIDWithQuery() async throws {
            let s = try Endpoint.current()
            for query in ["ts=123&version=1.5.4", "ts=17325400000000.8123456789&version=1.5.4", "ts=1"] {
                let response = try await s.get("\(s.key)/id?\(query)")
                #expect(response.status == 200, "?\(query): \(response)")
                #expect(isUUIDv4(response.text), "?\(query): \(response)")
            }
        }

        // Project decision (c), PROTOCOL.md §13: the key is checked on HTTP routes too. This replaces the
        // "arbitrary key" half of behaviour 3.
        @Test("3c (§13) a wrong key on GET /{key}/id and /{key}/peers answers 401 'Invalid key provided'")
        func wrongKeyOnHTTP() async throws {
            let s = try Endpoint.current()
            for route in ["id", "id?ts=123&version=1.5.4", "peers"] {
                let response = try await s.get("not-the-key/\(route)")
                #expect(response.status == 401, "GET not-the-key/\(route): \(response)")
                #expect(response.text == "Invalid key provided", "GET not-the-key/\(route): \(response)")
            }
        }

        @Test("1b other routes answer 404 (§4 'anything else')")
        func otherRoutes() async throws {
            let s = try Endpoint.current()
            for path in ["nothing", "\(s.key)/id/extra", "\(s.key)/peers/x", "\(s.key)/abc/tok/offer"] {
                let response = try await s.get(path)
                #expect(response.status == 404, "GET \(s.basePath)\(path): \(response)")
            }
        }

        @Test("7 CORS default: Origin is echoed in Access-Control-Allow-Origin with Vary: Origin; no Origin, no header")
        func corsDefault() async throws {
            let s = try Endpoint.current()
            for route in ["", "\(s.key)/id", "\(s.key)/peers"] {
                let response = try await s.get(route, headers: [("Origin", "https://example.test")])
                #expect(
                    response.header("Access-Control-Allow-Origin") == "https://example.test",
                    "GET \(route): \(response)"
                )
                let vary = response.headerValues("Vary").joined(separator: ",").lowercased()
                #expect(vary.contains("origin"), "GET \(route): \(response)")
            }
            let plain = try await s.get("\(s.key)/id")
            #expect(plain.header("Access-Control-Allow-Origin") == nil, "\(plain)")
        }

        @Test("9 pre-flight OPTIONS B{key}/id answers 204 with allow-origin and GET,HEAD,PUT,PATCH,POST,DELETE")
        func preflight() async throws {
            let s = try Endpoint.current()
            let response = try await HTTPClient.request(
                "OPTIONS",
                host: s.host,
                port: s.port,
                path: s.basePath + "\(s.key)/id",
                headers: [("Origin", "https://app.example.test"), ("Access-Control-Request-Method", "GET")]
            )
            #expect(response.status == 204, "\(response)")
            #expect(response.header("Access-Control-Allow-Origin") == "https://app.example.test", "\(response)")
            #expect(response.header("Access-Control-Allow-Methods") == "GET,HEAD,PUT,PATCH,POST,DELETE", "\(response)")
        }

        @Test("11 (§13 g) a WebSocket upgrade on another path is refused with HTTP 400")
        func wrongWebSocketPath() async throws {
            let s = try Endpoint.current()
            for path in ["notpeerjs", "peerjs/extra", "peerjsx", "\(s.key)/id"] {
                let outcome = try await WSClient.connectRaw(
                    host: s.host,
                    port: s.port,
                    path: s.basePath + path,
                    query: "key=\(s.key)&id=\(Unique.id("w"))&token=t"
                )
                switch outcome {
                case .success(let ws):
                    Issue.record("upgrade on \(s.basePath + path) was accepted")
                    await ws.close()
                case .failure(let refusal):
                    #expect(refusal.status == 400, "upgrade on \(s.basePath + path): \(refusal)")
                }
            }
        }
    }
}

@Suite("Discovery off (default flags)", .disabled(if: ServerFixture.isExternal, needsOwnServer), .peerServer())
struct DiscoveryOff {
    @Test("5 GET B{key}/peers with discovery off answers 401 text/plain 'Unauthorized'")
    func peersRefused() async throws {
        let s = try Endpoint.current()
        let response = try await s.get("\(s.key)/peers")
        #expect(response.status == 401)
        #expect(response.text == "Unauthorized", "\(response)")
        #expect(response.header("Content-Type")?.lowercased().hasPrefix("text/plain") == true, "\(response)")
    }
}

@Suite(
    "Discovery on, own server",
    .serialized,
    .disabled(if: ServerFixture.isExternal, needsOwnServer),
    .peerServer("--allow_discovery", "--key", "discokey")
)
struct DiscoveryOn {
    @Test("6 GET B{key}/peers with discovery on lists exactly the connected ids ([] when none)")
    func peersListed() async throws {
        let s = try Endpoint.current()
        #expect(try await s.listedPeers() == [])
        let empty = try await s.get("\(s.key)/peers")
        #expect(try empty.json() == [])
        let a = try await s.register("a")
        let b = try await s.register("b")
        #expect(try await s.listedPeers() == [a.id, b.id])
        await a.ws.close()
        #expect(try await s.waitForPeers { $0 == [b.id] }, "closing a must leave exactly [b]")
        await b.ws.close()
        #expect(try await s.waitForPeers { $0.isEmpty })
    }
}

@Suite(
    "CORS list",
    .disabled(if: ServerFixture.isExternal, needsOwnServer),
    .peerServer("--cors", "https://a.example.test", "--cors", "https://b.example.test")
)
struct CORSList {
    @Test("8 --cors A --cors B: A and B are echoed, C gets no Access-Control-Allow-Origin")
    func corsList() async throws {
        let s = try Endpoint.current()
        for origin in ["https://a.example.test", "https://b.example.test"] {
            let response = try await s.get("\(s.key)/id", headers: [("Origin", origin)])
            #expect(response.status == 200)
            #expect(response.header("Access-Control-Allow-Origin") == origin, "\(response)")
        }
        let other = try await s.get("\(s.key)/id", headers: [("Origin", "https://c.example.test")])
        #expect(other.header("Access-Control-Allow-Origin") == nil, "\(other)")
        let preflight = try await HTTPClient.request(
            "OPTIONS",
            host: s.host,
            port: s.port,
            path: s.basePath + "\(s.key)/id",
            headers: [("Origin", "https://b.example.test"), ("Access-Control-Request-Method", "GET")]
        )
        #expect(preflight.status == 204, "\(preflight)")
        #expect(preflight.header("Access-Control-Allow-Origin") == "https://b.example.test", "\(preflight)")
    }
}

@Suite("Custom path", .disabled(if: ServerFixture.isExternal, needsOwnServer), .peerServer("--path", "/myapp"))
struct CustomPath {
    @Test("10 --path /myapp: info at /myapp, ids at /myapp/peerjs/id, WS at /myapp/peerjs, /peerjs/id is 404")
    func customPath() async throws {
        let s = try Endpoint.current()
        #expect(s.basePath == "/myapp/")
        for infoPath in ["/myapp", "/myapp/"] {
            let info = try await HTTPClient.get(port: s.port, infoPath)
            #expect(info.status == 200, "GET \(infoPath): \(info)")
            #expect(try info.json()["name"] == "PeerJS Server", "GET \(infoPath): \(info)")
        }
        let id = try await HTTPClient.get(port: s.port, "/myapp/peerjs/id")
        #expect(id.status == 200)
        #expect(isUUIDv4(id.text), "\(id)")
        let rootID = try await HTTPClient.get(port: s.port, "/peerjs/id")
        #expect(rootID.status == 404, "\(rootID)")

        let peer = try await s.register("m")  // uses /myapp/peerjs
        await peer.ws.close()
        let outcome = try await WSClient.connectRaw(
            port: s.port,
            path: "/peerjs",
            query: "key=peerjs&id=\(Unique.id("m"))&token=t"
        )
        if case .success(let ws) = outcome {
            Issue.record("a WebSocket at /peerjs was accepted although the path is /myapp")
            await ws.close()
        }
    }
}
