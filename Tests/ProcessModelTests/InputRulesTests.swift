import Foundation
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

// Issue 15, items 4 and 5, against the real binary: ids, tokens and keys have length and
// character rules (README, "Ids, tokens and keys"), and no value a client or a policy program
// chose can forge a log line (every role's log handler escapes control characters, U+2028 and
// U+2029; Sources/IPC/LogText.swift).

private func errorFrame(_ text: String) -> JSONValue { ["type": "ERROR", "payload": ["msg": .string(text)]] }

private let invalidID = errorFrame("ID is invalid: at most 256 bytes of UTF-8, no control characters")
private let invalidToken = errorFrame("Token is invalid: at most 4096 bytes of UTF-8, no control characters")
private let invalidKey = errorFrame("Key is invalid: at most 256 bytes of UTF-8, no control characters")

/// An id that, logged raw, would add a line of its own claiming to be the supervisor's emergency.
private let logForgingID = "x%0A%3C0%3Epeerjs%5Bsupervisor%5D%20critical:%20forged"

/// The log must hold no forged record: no line starting with a journald priority or with the
/// supervisor's prefix at a level the supervisor never used in these runs.
private func expectNoForgedLine(_ server: ServerProcess?, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let server else { return }
    let forged = server.logLines.filter { $0.hasPrefix("<") || $0.hasPrefix("peerjs[supervisor] critical") }
    #expect(forged.isEmpty, "forged log lines: \(forged)", sourceLocation: sourceLocation)
}

/// Connects and returns the first message; waits for the close after anything but OPEN.
private func attempt(_ s: Endpoint, query: String) async throws -> JSONValue {
    let ws = try await s.connect(query: query)
    let first = try await ws.nextJSON(timeout: .seconds(5))
    if first != ["type": "OPEN"] { _ = try await ws.waitForClose() } else { await ws.close() }
    return first
}

@Suite(
    "Ids, tokens and keys: length and character rules; logs cannot be forged",
    .disabled(if: ServerFixture.isExternal, needsOwnServer),
    .peerServer("--allow_discovery", "--expire_timeout", "300", "--cleanup_out_msgs", "50")
)
struct InputRulesTests {
    @Test(
        "a 60,000-byte id is never registered: refused at the upgrade (a head over --max_header_size) or with ERROR 'ID is invalid…'; a 12,000-byte id gets ERROR and a close",
        arguments: [60_000, 12_000]
    )
    func hugeID(_ length: Int) async throws {
        let s = try Endpoint.current()
        let id = "big" + String(repeating: "x", count: length - 3)
        let query = "key=\(s.key)&id=\(id)&token=tok"
        switch try await WSClient.connectRaw(host: s.host, port: s.port, path: s.wsPath, query: query) {
        case .success(let ws):
            #expect(try await ws.nextJSON() == invalidID)
            _ = try await ws.waitForClose()
        case .failure(let refusal):
            #expect(length > 16 * 1024 && refusal.status == 431, "\(refusal)")
        }
        #expect(!(try await s.listedPeers()).contains(id))
    }

    @Test("a 300-byte id is refused like that; a 256-byte id registers")
    func idBoundary() async throws {
        let s = try Endpoint.current()
        let long = Unique.id("l") + String(repeating: "x", count: 300 - 10)
        #expect(long.utf8.count == 300)
        #expect(try await attempt(s, query: "key=\(s.key)&id=\(long)&token=tok") == invalidID)
        #expect(!(try await s.listedPeers()).contains(long))
        let exact = Unique.id("e") + String(repeating: "y", count: 256 - 10)
        let peer = try await s.register(id: exact)
        #expect(try await s.listedPeers().contains(exact))
        await peer.ws.close()
    }

    @Test("a 4096-byte token registers (a JWT fits); 4097 bytes gets ERROR 'Token is invalid…'")
    func tokenBoundary() async throws {
        let s = try Endpoint.current()
        let peer = try await s.register(token: String(repeating: "t", count: 4096))
        await peer.ws.close()
        let id = Unique.id("t")
        #expect(try await attempt(s, query: "key=\(s.key)&id=\(id)&token=\(String(repeating: "t", count: 4097))") == invalidToken)
        #expect(!(try await s.listedPeers()).contains(id))
    }

    @Test(
        "ids holding %0A, %0D, %09, %00, %7F, %C2%85 (C1), %E2%80%A8 (U+2028) or %FF (not UTF-8) get ERROR 'ID is invalid…'",
        arguments: ["%0A", "%0D", "%09", "%00", "%7F", "%C2%85", "%E2%80%A8", "%E2%80%A9", "%FF"]
    )
    func controlCharacterInID(_ bad: String) async throws {
        let s = try Endpoint.current()
        let prefix = Unique.id("c")
        #expect(try await attempt(s, query: "key=\(s.key)&id=\(prefix)\(bad)z&token=tok") == invalidID)
        #expect(!(try await s.listedPeers()).contains { $0.hasPrefix(prefix) })
    }

    @Test("a token or key with a control character, and an over-long key, are refused with their own messages")
    func tokenAndKey() async throws {
        let s = try Endpoint.current()
        #expect(try await attempt(s, query: "key=\(s.key)&id=\(Unique.id("k"))&token=a%0Ab") == invalidToken)
        #expect(try await attempt(s, query: "key=\(s.key)%0A&id=\(Unique.id("k"))&token=t") == invalidKey)
        #expect(try await attempt(s, query: "key=\(String(repeating: "k", count: 257))&id=\(Unique.id("k"))&token=t") == invalidKey)
        // A well-formed key that is not served is still the reference's message.
        #expect(try await attempt(s, query: "key=\(s.key)x&id=\(Unique.id("k"))&token=t") == errorFrame("Invalid key provided"))
        // The HTTP routes keep answering 401 for any key not served, over-long ones included.
        let response = try await s.get("\(String(repeating: "k", count: 300))/id")
        #expect(response.status == 401 && response.text == "Invalid key provided", "\(response)")
    }

    @Test("a PeerJS client's ordinary ids register: spaces (%20 and +), dashes, underscores, UUIDs")
    func ordinaryIDs() async throws {
        let s = try Endpoint.current()
        let suffix = Unique.token(6)
        let spaced = try await s.register(id: "alice%20smith\(suffix)")
        let plus = try await s.register(id: "bob+jones_2-x\(suffix)")
        let uuid = try await s.register(id: UUID().uuidString.lowercased())
        let listed = try await s.listedPeers()
        #expect(listed.isSuperset(of: ["alice smith\(suffix)", "bob jones_2-x\(suffix)", uuid.id]))
        for peer in [spaced, plus, uuid] { await peer.ws.close() }
    }

    @Test("the log-forging id is refused, and no forged line reaches the log")
    func forgingID() async throws {
        let s = try Endpoint.current()
        #expect(try await attempt(s, query: "key=\(s.key)&id=\(logForgingID)&token=tok") == invalidID)
        // A registration after it proves the broker went on (and flushes its log up to here).
        let mark = s.server?.logLines.count ?? 0
        let peer = try await s.register("after")
        _ = try await s.server?.waitForLog(from: mark, "the next client's connection") { $0.contains("Client connected: \(peer.id)") }
        await peer.ws.close()
        expectNoForgedLine(s.server)
    }

    @Test("E6 a message to a dst no id can have (300 bytes, a newline) is not queued: no EXPIRE for it")
    func invalidDestination() async throws {
        let s = try Endpoint.current()
        let sender = try await s.register("src")
        let long = String(repeating: "d", count: 300)
        try await sender.send(type: "OFFER", to: long, payload: ["sdp": "x"])
        try await sender.send(type: "OFFER", to: "bad\ndst", payload: ["sdp": "x"])
        // A real offline id queued after them expires (300 ms): its EXPIRE is the only frame.
        let offline = Unique.id("off")
        try await sender.send(type: "OFFER", to: offline, payload: ["sdp": "x"])
        #expect(try await sender.ws.nextJSON(timeout: .seconds(5)) == ["type": "EXPIRE", "src": .string(offline), "dst": .string(sender.id)])
        try await sender.ws.expectNoFrame(within: .milliseconds(400))
        await sender.ws.close()
    }
}

/// With the auth helper: an id, token or key that breaks the rules is refused by the broker
/// before the helper is asked; what a policy program says is logged escaped.
@Suite("Ids, tokens and keys with the auth helper", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct InputRulesAuthTests {
    typealias T = AuthHelperProcessTests

    @Test("--auth-users: a 300-byte id, a 600-byte id and an id with %0A get the broker's refusal, not the helper's 'Invalid ID'")
    func usersFile() async throws {
        let file = try T.TempFile(T.users)
        try await ServerProcess.withServer(["--auth-users", file.path]) { server in
            let s = try T.endpoint(server)
            #expect(try await attempt(s, query: "key=peerjs&id=u1\(String(repeating: "x", count: 298))&token=t1") == invalidID)
            #expect(try await attempt(s, query: "key=peerjs&id=u1\(String(repeating: "x", count: 598))&token=t1") == invalidID)
            #expect(try await attempt(s, query: "key=peerjs&id=u1%0A&token=t1") == invalidID)
            #expect(try await attempt(s, query: "key=peerjs&id=u1&token=t1%0A") == invalidToken)
            #expect(try await attempt(s, query: "key=peerjs&id=u1&token=t1") == ["type": "OPEN"])
            expectNoForgedLine(server)
        }
    }

    /// A policy program that reports every question on its stderr (JSON-quoted, so its own
    /// output is one line), refuses ids starting `forge` with a reason holding a newline, a
    /// journald priority and U+2028, answers ids starting `garbage` with a non-JSON line holding
    /// a CR, and allows everyone else.
    static let program = #"""
        #!/usr/bin/env python3
        import json, sys
        for line in sys.stdin:
            message = json.loads(line)
            if message["type"] != "auth":
                continue
            print("policy asked: " + json.dumps(message["id"][:24]), file=sys.stderr, flush=True)
            if message["id"].startswith("forge"):
                reason = "denied\n<0>peerjs[supervisor] critical: forged by policy\u2028end"
                sys.stdout.write(json.dumps({"rid": message["rid"], "allow": False, "reason": reason}) + "\n")
            elif message["id"].startswith("garbage"):
                sys.stdout.buffer.write("not json\r<0>peerjs[supervisor] critical: forged answer\u2028end\n".encode("utf-8"))
            else:
                sys.stdout.write(json.dumps({"rid": message["rid"], "allow": True}) + "\n")
            sys.stdout.flush()
        """#

    @Test("--auth-program: the program is not asked about refused ids; its reason and its bad answer are logged escaped")
    func policyProgram() async throws {
        let program = try T.TempFile(Self.program, name: "policy.py")
        chmod(program.path, 0o755)
        try await ServerProcess.withServer(["--auth-program", program.path]) { server in
            let s = try T.endpoint(server)
            // Refused by the broker: the program never hears of them.
            #expect(try await attempt(s, query: "key=peerjs&id=refused\(String(repeating: "x", count: 300))&token=t") == invalidID)
            #expect(try await attempt(s, query: "key=peerjs&id=refused%0Ax&token=t") == invalidID)
            #expect(try await attempt(s, query: "key=peerjs%0A&id=refused-key&token=t") == invalidKey)
            let mark = server.logLines.count
            #expect(try await attempt(s, query: "key=peerjs&id=allowed&token=t") == ["type": "OPEN"])
            _ = try await server.waitForLog(from: mark, "the program asked about 'allowed'") { $0.contains(#"policy asked: "allowed""#) }
            #expect(!server.logLines.contains { $0.contains(#"policy asked: "refused"#) }, "the program was asked about a refused id")

            // The program's reason reaches the client as it is, and the log escaped, in one line.
            let reason = "denied\n<0>peerjs[supervisor] critical: forged by policy\u{2028}end"
            #expect(try await attempt(s, query: "key=peerjs&id=forge1&token=t") == errorFrame(reason))
            let denied = try await server.waitForLog(from: mark, "the broker's denial line") { $0.contains("auth denied forge1") }
            #expect(denied.contains(#"auth denied forge1: denied\n<0>peerjs[supervisor] critical: forged by policy\u{2028}end"#), "\(denied)")

            // An answer that is not JSON is logged (by the helper) escaped too: the CR and U+2028 stay inside.
            #expect(try await attempt(s, query: "key=peerjs&id=garbage1&token=t") == errorFrame("Error on Auth"))
            let garbage = try await server.waitForLog(from: mark, "the helper's warning about the answer") {
                $0.contains("the policy program's answer is not")
            }
            #expect(garbage.contains(#"not json\r<0>peerjs[supervisor] critical: forged answer\u{2028}end"#), "\(garbage)")
            for line in server.logLines {
                #expect(!line.unicodeScalars.contains { $0 == "\r" || $0 == "\u{2028}" }, "raw CR or U+2028 in \(line.debugDescription)")
            }
            expectNoForgedLine(server)
        }
    }
}
