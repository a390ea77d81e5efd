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

    static func claims(sub: String, exp: Int? = nil, nbf: Int? = nil, keys: [String]? = nil, aud: String? = nil, iss: String? = nil) -> String {
        var fields = [#""sub":"\#(sub)""#]
        if let exp { fields.append(#""exp":\#(exp)"#) }
        if let nbf { fields.append(#""nbf":\#(nbf)"#) }
        if let aud { fields.append(#""aud":\#(aud)"#) }
        if let iss { fields.append(#""iss":"\#(iss)""#) }
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
            // Issue 16 item 5: `exp` is required; a token without one would be valid for ever.
            #expect(try await T.attempt(s, id: "alice", token: hs(Self.claims(sub: "alice"), key)) == errorFrame("Invalid ID"))
            #expect(try await T.attempt(s, id: "alice", token: hs(Self.claims(sub: "alice", keys: ["peerjs"]), key)) == errorFrame("Invalid ID"))
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

    @Test("Issue 16 item 5: --auth-jwt-audience / --auth-jwt-issuer: wrong or missing aud, wrong or missing iss, no exp → 'Invalid ID'; the right ones (aud as a string or in an array) → OPEN")
    func audienceAndIssuer() async throws {
        let secret = "a-shared-secret-of-at-least-32-bytes!"
        let file = try T.TempFile(secret + "\n", name: "jwt.key")
        let key = SymmetricKey(data: Array(secret.utf8))
        func hs(_ claims: String) -> String {
            Self.token(alg: "HS256", claims: claims) { Array(HMAC<SHA256>.authenticationCode(for: $0, using: key)) }
        }
        let exp = Self.now + 600
        let iss = "https://idp.example.com/"
        try await ServerProcess.withServer(["--auth-jwt-key", file.path, "--auth-jwt-audience", "peerjs-signalling", "--auth-jwt-issuer", iss]) { server in
            let s = try T.endpoint(server)
            let open: JSONValue = ["type": "OPEN"]
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", exp: exp, aud: #""peerjs-signalling""#, iss: iss))) == open)
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", exp: exp, aud: #"["other","peerjs-signalling"]"#, iss: iss))) == open)
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", aud: #""peerjs-signalling""#, iss: iss))) == errorFrame("Invalid ID"), "no exp")
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", exp: exp, aud: #""other-service""#, iss: iss))) == errorFrame("Invalid ID"), "wrong aud")
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", exp: exp, aud: #"["a","b"]"#, iss: iss))) == errorFrame("Invalid ID"), "aud array without ours")
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", exp: exp, iss: iss))) == errorFrame("Invalid ID"), "no aud")
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", exp: exp, aud: #""peerjs-signalling""#, iss: "https://evil.example.com/"))) == errorFrame("Invalid ID"), "wrong iss")
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", exp: exp, aud: #""peerjs-signalling""#))) == errorFrame("Invalid ID"), "no iss")
        }
        // Without the flags, aud and iss are not checked.
        try await ServerProcess.withServer(["--auth-jwt-key", file.path]) { server in
            let s = try T.endpoint(server)
            #expect(try await T.attempt(s, id: "erin", token: hs(Self.claims(sub: "erin", exp: exp, aud: #""other-service""#, iss: "x"))) == ["type": "OPEN"])
        }
    }

    @Test("Issue 16 item 5: an identity provider's RS256 token (2048-bit key, kid, typical claims, 1 to 1.5 KiB) passes the token cap and is verified, with aud/iss from the --config file")
    func realisticRS256() async throws {
        let rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let keyFile = try T.TempFile(rsa.publicKey.pemRepresentation, name: "idp.pem")
        let iss = "https://login.example-idp.com/8f2c6a4e-1b7d-4c9a-9e3f-2d5b7a1c0e94/v2.0"
        let aud = "api://peerjs-signalling-7c1e2f"
        let config = try T.TempFile("auth_jwt_key = \(keyFile.path)\nauth_jwt_audience = \(aud)\nauth_jwt_issuer = \(iss)\n", name: "peerjs.conf")
        let now = Self.now
        // The shape of an Entra ID / Auth0 / Keycloak access token.
        let claims = #"{"aud":["\#(aud)","https://graph.example-idp.com"],"iss":"\#(iss)","iat":\#(now - 60),"nbf":\#(now - 60),"exp":\#(now + 3600),"#
            + #""azp":"4a1b2c3d-5e6f-7a8b-9c0d-1e2f3a4b5c6d","azpacr":"1","name":"Frank Example","preferred_username":"frank@example.com","#
            + #""email":"frank@example.com","email_verified":true,"given_name":"Frank","family_name":"Example","oid":"b8c9d0e1-f2a3-4b5c-6d7e-8f9a0b1c2d3e","#
            + #""scp":"signalling.connect signalling.relay openid profile email","#
            + #""roles":["peer","viewer"],"realm_access":{"roles":["offline_access","uma_authorization"]},"sid":"3f4e5d6c-7b8a-9c0d-1e2f-3a4b5c6d7e8f","#
            + #""tid":"8f2c6a4e-1b7d-4c9a-9e3f-2d5b7a1c0e94","uti":"Zk3xq9PLbUe0r7sT6wY5AA","ver":"2.0","jti":"f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f","#
            + #""sub":"frank","keys":["peerjs"]}"#
        let header = #"{"alg":"RS256","typ":"JWT","kid":"nOo3ZDrODXEK1jKWhXslHR_KXEg","x5t":"nOo3ZDrODXEK1jKWhXslHR_KXEg"}"#
        let input = base64URL(Array(header.utf8)) + "." + base64URL(Array(claims.utf8))
        let token = input + "." + base64URL(Array(try rsa.signature(for: Array(input.utf8), padding: .insecurePKCS1v1_5).rawRepresentation))
        #expect((1024...1600).contains(token.utf8.count), "1 to 1.5 KiB, like a real one: \(token.utf8.count) bytes")
        let wrongAudienceClaims = claims.replacingOccurrences(of: aud, with: "api://another-service")
        let wrongInput = base64URL(Array(header.utf8)) + "." + base64URL(Array(wrongAudienceClaims.utf8))
        let wrongAudience = wrongInput + "." + base64URL(Array(try rsa.signature(for: Array(wrongInput.utf8), padding: .insecurePKCS1v1_5).rawRepresentation))
        try await ServerProcess.withServer(["--config", config.path]) { server in
            let s = try T.endpoint(server)
            #expect(try await T.attempt(s, id: "frank", token: token) == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "frank", token: wrongAudience) == errorFrame("Invalid ID"))
        }
    }
}
