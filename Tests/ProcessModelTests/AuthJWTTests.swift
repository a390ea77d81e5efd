import Crypto
import Foundation
import _CryptoExtras
import PeerJSTesting
import Testing

private func errorFrame(_ text: String) -> JSONValue { ["type": "ERROR", "payload": ["msg": .string(text)]] }

private func base64URL(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

/// `--auth-jwt-key`: the token is a JWT; `sub` = id, `keys` limits the rooms, `exp`/`nbf` enforced.
@Suite("Auth JWT", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct AuthJWTTests {
    typealias T = AuthHelperProcessTests

    static func token(alg: String, claims: String, sign: ([UInt8]) -> [UInt8]) -> String {
        let input = base64URL(Array(#"{"alg":"\#(alg)","typ":"JWT"}"#.utf8)) + "." + base64URL(Array(claims.utf8))
        return input + "." + base64URL(sign(Array(input.utf8)))
    }

    static func claims(sub: String, exp: Int? = nil, nbf: Int? = nil, keys: [String]? = nil) -> String {
        var fields = [#""sub":"\#(sub)""#]
        if let exp { fields.append(#""exp":\#(exp)"#) }
        if let nbf { fields.append(#""nbf":\#(nbf)"#) }
        if let keys { fields.append(#""keys":[\#(keys.map { "\"\($0)\"" }.joined(separator: ","))]"#) }
        return "{" + fields.joined(separator: ",") + "}"
    }

    static var now: Int { Int(Date().timeIntervalSince1970) }

    @Test("HS256: valid → OPEN; expired, not yet valid, wrong signature, wrong sub, alg none, padded → 'Invalid ID'; key not in keys → 'Invalid Key'")
    func hs256() async throws {
        let secret = "a-shared-secret-of-at-least-32-bytes!"
        let file = try T.TempFile(secret + "\n", name: "jwt.key")
        let key = SymmetricKey(data: Array(secret.utf8))
        let other = SymmetricKey(data: Array("another-secret-of-at-least-32-bytes!!".utf8))
        func hs(_ claims: String, _ key: SymmetricKey) -> String {
            Self.token(alg: "HS256", claims: claims) { Array(HMAC<SHA256>.authenticationCode(for: $0, using: key)) }
        }
        try await ServerProcess.withServer(["--auth-jwt-key", file.path, "--keys", "peerjs,room"]) { server in
            let s = try T.endpoint(server)
            let valid = hs(Self.claims(sub: "alice", exp: Self.now + 600, keys: ["peerjs"]), key)
            #expect(try await T.attempt(s, id: "alice", token: valid) == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "alice", token: hs(Self.claims(sub: "alice"), key)) == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "alice", token: hs(Self.claims(sub: "alice", exp: Self.now - 60), key)) == errorFrame("Invalid ID"))
            #expect(try await T.attempt(s, id: "alice", token: hs(Self.claims(sub: "alice", nbf: Self.now + 600), key)) == errorFrame("Invalid ID"))
            #expect(try await T.attempt(s, id: "alice", token: hs(Self.claims(sub: "alice", exp: Self.now + 600), other)) == errorFrame("Invalid ID"))
            #expect(try await T.attempt(s, id: "alice", token: hs(Self.claims(sub: "bob", exp: Self.now + 600), key)) == errorFrame("Invalid ID"))
            #expect(try await T.attempt(s, id: "alice", token: valid, key: "room") == errorFrame("Invalid Key"))
            let none = Self.token(alg: "none", claims: Self.claims(sub: "alice")) { _ in [] }
            #expect(try await T.attempt(s, id: "alice", token: none) == errorFrame("Invalid ID"))
            #expect(try await T.attempt(s, id: "alice", token: "not-a-jwt") == errorFrame("Invalid ID"))
            // Malformed shapes: a fourth part, an empty payload, a signed token with its payload swapped
            // for another's, non-ASCII (percent-encoded) in the signature.
            #expect(try await T.attempt(s, id: "alice", token: valid + ".x") == errorFrame("Invalid ID"))
            let validParts = valid.split(separator: ".", omittingEmptySubsequences: false)
            #expect(try await T.attempt(s, id: "alice", token: "\(validParts[0])..\(validParts[2])") == errorFrame("Invalid ID"))
            let bobParts = hs(Self.claims(sub: "bob", exp: Self.now + 600), key).split(separator: ".")
            #expect(try await T.attempt(s, id: "bob", token: "\(validParts[0]).\(bobParts[1]).\(validParts[2])") == errorFrame("Invalid ID"))
            #expect(try await T.attempt(s, id: "alice", token: valid + "%C3%A9") == errorFrame("Invalid ID"))
            // Base64 padding is not base64url (RFC 7515 §2), even where it would be correct.
            #expect(try await T.attempt(s, id: "alice", token: valid + "=") == errorFrame("Invalid ID"))
        }
    }

    @Test("ES256 public key: a token signed by the matching private key → OPEN; by another key → 'Invalid ID'")
    func es256() async throws {
        let signer = P256.Signing.PrivateKey()
        let stranger = P256.Signing.PrivateKey()
        let file = try T.TempFile(signer.publicKey.pemRepresentation, name: "jwt.pem")
        func es(_ claims: String, _ key: P256.Signing.PrivateKey) throws -> String {
            Self.token(alg: "ES256", claims: claims) { (try? key.signature(for: $0).rawRepresentation).map(Array.init) ?? [] }
        }
        try await ServerProcess.withServer(["--auth-jwt-key", file.path]) { server in
            let s = try T.endpoint(server)
            #expect(try await T.attempt(s, id: "carol", token: try es(Self.claims(sub: "carol", exp: Self.now + 600), signer)) == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "carol", token: try es(Self.claims(sub: "carol", exp: Self.now + 600), stranger)) == errorFrame("Invalid ID"))
        }
    }

    @Test("SIGHUP re-reads the key inside the sandbox: an RS256 public key replaces the ES256 one")
    func reloadToRS256() async throws {
        let ec = P256.Signing.PrivateKey()
        let rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let file = try T.TempFile(ec.publicKey.pemRepresentation, name: "jwt.pem")
        let claims = Self.claims(sub: "dave", exp: Self.now + 600)
        let es = Self.token(alg: "ES256", claims: claims) { (try? ec.signature(for: $0).rawRepresentation).map(Array.init) ?? [] }
        let rs = Self.token(alg: "RS256", claims: claims) {
            (try? rsa.signature(for: $0, padding: .insecurePKCS1v1_5).rawRepresentation).map(Array.init) ?? []
        }
        try await ServerProcess.withServer(["--auth-jwt-key", file.path]) { server in
            let s = try T.endpoint(server)
            #expect(try await T.attempt(s, id: "dave", token: es) == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "dave", token: rs) == errorFrame("Invalid ID"))
            try file.write(rsa.publicKey.pemRepresentation)
            let mark = server.logLines.count
            server.signal(SIGHUP)
            _ = try await server.waitForLog(from: mark, "auth policy reloaded") { $0.contains("auth policy reloaded") }
            #expect(try await T.attempt(s, id: "dave", token: rs) == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "dave", token: es) == errorFrame("Invalid ID"))
            #expect(!server.logLines.contains { $0.contains("auth helper pid=") }, "the helper died")
        }
    }
}
