import PeerProtocol
import Testing

/// The registration path as actions: the engine asks the policy by returning `.authorize`, keeps
/// the registration waiting, and takes the answer back; no callback, no order to keep.
@Suite("Registration with a policy (admit / verdict)")
struct AuthorizationTests {
    static let alice = RegistrationRequest(id: "alice", token: "t", key: "peerjs", version: "1.5.4")
    static let c = ConnectionID(1)

    static func policed() -> Harness { Harness(ProtocolSettings(authorizes: true)) }

    @Test("without a policy admit registers at once, and the event carries the client's address")
    func noPolicy() {
        let h = Harness()
        #expect(h.engine.admit(Self.c, request: Self.alice, ip: "192.0.2.7") == .open)
        #expect(h.frames(1) == [open])
        #expect(h.transport.events == [.connected(id: "alice", key: "peerjs", connection: Self.c, ip: "192.0.2.7")])
    }

    @Test("with a policy admit asks first, sends nothing, and registers on .allow")
    func allow() {
        let h = Self.policed()
        let query = AuthorizationQuery(connection: Self.c, id: "alice", token: "t", key: "peerjs", ip: "192.0.2.7", version: "1.5.4")
        #expect(h.engine.admit(Self.c, request: Self.alice, ip: "192.0.2.7") == .authorize(query))
        #expect(h.frames(1).isEmpty && h.engine.waitingForAuthorization == 1)
        #expect(h.engine.verdict(.allow, for: Self.c) == .open)
        #expect(h.frames(1) == [open])
        #expect(h.engine.waitingForAuthorization == 0)
        #expect(h.engine.verdict(.allow, for: Self.c) == .none, "a second answer")
    }

    @Test("every other answer refuses with its own text: deny, deny without text, timeout, failure, unaskable")
    func refusals() {
        for (answer, text) in [
            (AuthorizationAnswer.deny("nope"), "nope"), (.deny(""), ProtocolText.authFailed),
            (.timedOut, ProtocolText.authTimeout), (.failed, ProtocolText.authFailed), (.unaskable, ProtocolText.invalidID),
        ] {
            let h = Self.policed()
            _ = h.engine.admit(Self.c, request: Self.alice, ip: "")
            #expect(h.engine.verdict(answer, for: Self.c) == .refuse(.denied(text)))
            #expect(h.frames(1) == [errorFrame(text)])
            #expect(h.transport.closed == [Self.c])
            #expect(h.engine.registry.count == 0)
        }
    }

    @Test("the parameter rules run before the policy is asked; the key and id rules after it")
    func order() {
        let h = Self.policed()
        #expect(h.engine.admit(Self.c, request: RegistrationRequest(id: "a", token: nil, key: "peerjs"), ip: "") == .refuse(.missingParameters))
        #expect(h.engine.admit(ConnectionID(2), request: RegistrationRequest(id: "a\u{7}", token: "t", key: "peerjs"), ip: "") == .refuse(.malformedID))
        let other = RegistrationRequest(id: "a", token: "t", key: "other")
        guard case .authorize = h.engine.admit(ConnectionID(3), request: other, ip: "") else {
            Issue.record("an unknown key was refused before the policy was asked")
            return
        }
        #expect(h.engine.verdict(.allow, for: ConnectionID(3)) == .refuse(.invalidKey))
    }

    @Test("a client that leaves while the policy decides: the answer finds nothing")
    func clientGone() {
        let h = Self.policed()
        _ = h.engine.admit(Self.c, request: Self.alice, ip: "")
        h.engine.connectionClosed(Self.c)
        #expect(h.engine.verdict(.allow, for: Self.c) == .none)
        #expect(h.engine.registry.count == 0 && h.frames(1).isEmpty)
    }
}
