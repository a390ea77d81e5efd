import AuthHelper
import IPC
import Testing

@Suite("Auth helper policy")
struct AuthHelperTests {
    let sample = """
        # id token [key ...]
        alice  s3cret
        bob    t0ken   room private   # bob may use two rooms

        carol\tpass\tprivate
        """

    @Test("the users file: comments, blank lines, tabs, optional keys")
    func parse() throws {
        let file = try UsersFile(text: sample, name: "users")
        #expect(file.users.count == 3)
        #expect(file.users["alice"]?.keys == [])
        #expect(file.users["bob"]?.keys == ["room", "private"])
        #expect(file.users["carol"]?.token == Array("pass".utf8))
    }

    @Test("a malformed or duplicate line is an error naming file and line")
    func malformed() {
        #expect(throws: AuthError.self) { try UsersFile(text: "ok tok\nlonely\n", name: "/etc/peerjs/users") }
        do {
            _ = try UsersFile(text: "ok tok\n\nlonely # no token\n", name: "/etc/peerjs/users")
            Issue.record("no error")
        } catch {
            #expect("\(error)".hasPrefix("/etc/peerjs/users:3:"))
        }
        do {
            _ = try UsersFile(text: "a b\na c\n", name: "u")
            Issue.record("no error")
        } catch {
            #expect("\(error)".hasPrefix("u:2:"))
        }
    }

    @Test("constant-time comparison is still a comparison")
    func compare() {
        #expect(UsersFile.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!UsersFile.constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!UsersFile.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!UsersFile.constantTimeEqual([], Array("a".utf8)))
        #expect(UsersFile.constantTimeEqual([], []))
        // Lengths differing by 256 must not compare equal.
        #expect(!UsersFile.constantTimeEqual([UInt8](repeating: 0, count: 256), []))
    }

    @Test("60/64 decisions: unknown id or wrong token → Invalid ID; a key not listed → Invalid Key")
    func decisions() throws {
        let policy = AuthPolicy(users: try UsersFile(text: sample, name: "users"), hasProgram: false)
        func ask(_ id: String, _ token: String, _ key: String = "peerjs") -> AuthDecision {
            policy.decide(AuthQuery(id: id, token: token, key: key, ip: "127.0.0.1", version: ""))
        }
        #expect(ask("alice", "s3cret") == .allow)
        #expect(ask("alice", "s3cre") == .deny("Invalid ID"))
        #expect(ask("mallory", "s3cret") == .deny("Invalid ID"))
        #expect(ask("bob", "t0ken", "room") == .allow)
        #expect(ask("bob", "t0ken", "other") == .deny("Invalid Key"))
        let withProgram = AuthPolicy(users: nil, hasProgram: true)
        #expect(withProgram.decide(AuthQuery(id: "x", token: "y", key: "k", ip: "", version: "")) == .askProgram)
    }

    @Test("JSON lines: escaping out, top-level fields in")
    func json() {
        #expect(JSONLine.object([("id", "a\"b\\c\n\u{1}")]) == #"{"id":"a\"b\\c\n\u0001"}"#)
        #expect(JSONLine.parseObject(#"{"allow":true}"#) == ["allow": .bool(true)])
        #expect(JSONLine.parseObject(#" {"allow": false, "reason": "no \"way\" \u00e9", "n": 1.5e3, "x": {"y": [1, null]}} "#)
            == ["allow": .bool(false), "reason": .string("no \"way\" é"), "n": .other, "x": .other])
        #expect(JSONLine.parseObject("allow") == nil)
        #expect(JSONLine.parseObject(#"{"allow":true} trailing"#) == nil)
        #expect(JSONLine.parseObject(#"{"allow":tru}"#) == nil)
    }

    @Test("auth frames round-trip and fit their caps at the field limits")
    func frames() throws {
        let query = AuthQuery(
            id: String(repeating: "i", count: AuthQuery.maxIDLength), token: String(repeating: "t", count: AuthQuery.maxTokenLength),
            key: String(repeating: "k", count: AuthQuery.maxKeyLength), ip: String(repeating: "1", count: AuthQuery.maxIPLength),
            version: String(repeating: "v", count: AuthQuery.maxVersionLength))
        #expect(try AuthQuery(decoding: query.encodeChecked()) == query)
        #expect(try query.encodeChecked().count <= FrameType.authQuery.maxPayload)
        let verdict = AuthVerdict(allow: false, reason: String(repeating: "r", count: AuthVerdict.maxReasonLength))
        #expect(try verdict.encodeChecked().count <= FrameType.authVerdict.maxPayload)
        let event = PeerEventMessage(kind: .disconnect, id: query.id, key: query.key, ip: query.ip)
        #expect(try PeerEventMessage(decoding: event.encodeChecked()) == event)
        #expect(try event.encodeChecked().count <= FrameType.peerEvent.maxPayload)
        #expect(throws: IPCError.self) { try PeerEventMessage(decoding: [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) }
    }
}
