public import AuthHelper
import Crypto
import ExtrasBase64
import FoundationEssentials
import JWTKit
import _CryptoExtras

/// `--auth-jwt-key`: the token a client presents is a JWT signed with this key (HS256 secret, or
/// an ES256 / RS256 public key in PEM). Its `sub` must be the peer id, an optional `keys` claim
/// lists the keys (rooms) it may use, `exp` is required and enforced (a token without one would be
/// valid for ever), `nbf` is enforced when present, and `aud` / `iss` must name the configured
/// audience / issuer when one is configured (`--auth-jwt-audience`, `--auth-jwt-issuer`), so a
/// token an identity provider issued for another service is refused. Verification is
/// synchronous (the helper is one thread under seccomp): swift-crypto checks the signature, then
/// jwt-kit's JSON decoder and claim types read the payload and check the time claims; the
/// header's `alg` must match the key, so a token cannot choose `none` or a different algorithm.
public struct JWTVerifier: TokenVerifier {
    enum Key: Sendable {
        /// The secret already absorbed (HMAC's key set-up was a twentieth of a check); each check
        /// works on a copy.
        case hmac(HMAC<SHA256>)
        case ecdsa(P256.Signing.PublicKey)
        case rsa(_RSA.Signing.PublicKey)

        var algorithm: String {
            switch self {
            case .hmac: "HS256"
            case .ecdsa: "ES256"
            case .rsa: "RS256"
            }
        }
    }

    /// The claims the helper reads.
    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim?
        var aud: AudienceClaim?
        var iss: IssuerClaim?
        var keys: [String]?

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    let key: Key
    /// `--auth-jwt-audience`: the `aud` claim (a string or an array) must contain it; nil: not checked.
    let audience: String?
    /// `--auth-jwt-issuer`: the `iss` claim must equal it; nil: not checked.
    let issuer: String?
    /// jwt-kit's decoder for claims (seconds-since-1970 dates). Only the payload is decoded: the
    /// header was read for `alg` already, and jwt-kit's full parse decoding it again as a
    /// `JWTHeader` was a sixth of the helper's time per connection.
    private let claimsDecoder: any JWTJSONDecoder = DefaultJWTParser().jsonDecoder

    /// Reads the key file: a PEM public key (EC P-256 or RSA), otherwise the bytes of an HMAC
    /// secret (one trailing newline is ignored; at least 32 bytes).
    public init(keyFile text: String, audience: String? = nil, issuer: String? = nil) throws(AuthError) {
        self.audience = audience
        self.issuer = issuer
        if text.contains("-----BEGIN") {
            if let ec = try? P256.Signing.PublicKey(pemRepresentation: text) {
                key = .ecdsa(ec)
            } else if let rsa = try? _RSA.Signing.PublicKey(pemRepresentation: text) {
                key = .rsa(rsa)
            } else {
                throw AuthError("the JWT key is PEM but neither an EC P-256 nor an RSA public key")
            }
            return
        }
        var secret = Array(text.utf8)
        if secret.last == 0x0a { secret.removeLast() }
        if secret.last == 0x0d { secret.removeLast() }
        guard secret.count >= 32 else {
            throw AuthError("the HS256 secret has \(secret.count) bytes; use at least 32")
        }
        key = .hmac(HMAC<SHA256>(key: SymmetricKey(data: secret)))
    }

    /// A factory for ``AuthHelperOptions``.
    public static func load(path: String, audience: String? = nil, issuer: String? = nil) throws(AuthError) -> any TokenVerifier {
        try JWTVerifier(keyFile: UsersFile.readText(path), audience: audience, issuer: issuer)
    }

    public func denial(token: String, id: String, key room: String) -> String? {
        // Split on the bytes: "." is ASCII, and a split by Character cost a tenth of a check.
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).map(Substring.init)
        guard parts.count == 3, let headerBytes = Self.base64URLDecode(parts[0]),
            let header = JSONLine.parseObject(String(decoding: headerBytes, as: UTF8.self)),
            case .string(let algorithm)? = header["alg"], algorithm == key.algorithm,
            let signature = Self.base64URLDecode(parts[2])
        else { return AuthPolicy.invalidID }
        let signed = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        guard verifies(signature: signature, over: signed) else { return AuthPolicy.invalidID }
        let claims: Claims
        do {
            guard let payload = Self.base64URLDecode(parts[1]) else { return AuthPolicy.invalidID }
            claims = try claimsDecoder.decode(Claims.self, from: Data(payload))
            try claims.exp.verifyNotExpired()
            try claims.nbf?.verifyNotBefore()
        } catch {
            return AuthPolicy.invalidID
        }
        guard claims.sub.value == id else { return AuthPolicy.invalidID }
        if let audience, claims.aud?.value.contains(audience) != true { return AuthPolicy.invalidID }
        if let issuer, claims.iss?.value != issuer { return AuthPolicy.invalidID }
        if let keys = claims.keys, !keys.contains(room) { return AuthPolicy.invalidKey }
        return nil
    }

    /// Runs every code path of a check once (parser, JSON decoder, claims, the signature check)
    /// so that lazy initialisation happens before the seccomp filter.
    public func prime() {
        let header = Self.base64URLEncode(Array(#"{"alg":"\#(key.algorithm)","typ":"JWT"}"#.utf8))
        let claimsText = #"{"sub":"prime","exp":4102444800,"nbf":0,"aud":["a"],"iss":"i","keys":["k"]}"#
        let payload = Self.base64URLEncode(Array(claimsText.utf8))
        var signature = [UInt8](repeating: 1, count: 64)
        if case .hmac(var mac) = key {
            mac.update(data: Array("\(header).\(payload)".utf8))
            signature = Array(mac.finalize())
        } else if case .rsa = key {
            signature = [UInt8](repeating: 1, count: 256)
        }
        let token = "\(header).\(payload).\(Self.base64URLEncode(signature))"
        _ = denial(token: token, id: "prime", key: "k")
        if let claims = try? claimsDecoder.decode(Claims.self, from: Data(claimsText.utf8)) {
            _ = try? claims.exp.verifyNotExpired()
            _ = try? claims.nbf?.verifyNotBefore()
        }
    }

    /// Base64url without padding (RFC 7515 §2); only `prime` encodes.
    static func base64URLEncode(_ bytes: [UInt8]) -> String {
        Base64.encodeToString(bytes: bytes, options: [.base64UrlAlphabet, .omitPaddingCharacter])
    }

    private func verifies(signature: [UInt8], over data: [UInt8]) -> Bool {
        switch key {
        case .hmac(var mac):
            mac.update(data: data)
            return mac.finalize() == signature  // swift-crypto compares in constant time
        case .ecdsa(let publicKey):
            guard let parsed = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return publicKey.isValidSignature(parsed, for: data)
        case .rsa(let publicKey):
            let parsed = _RSA.Signing.RSASignature(rawRepresentation: signature)
            return publicKey.isValidSignature(parsed, for: data, padding: .insecurePKCS1v1_5)
        }
    }

    /// Base64url without padding (RFC 7515 §2): nil for anything else, padding and the `+` `/`
    /// alphabet included. swift-extras-base64 decodes (Foundation's decoder after translating the
    /// alphabet was a tenth of a check); it would take a final `=`, so that is refused first.
    static func base64URLDecode(_ text: Substring) -> [UInt8]? {
        guard !text.utf8.contains(UInt8(ascii: "=")) else { return nil }
        return try? Base64.decode(bytes: text.utf8, options: [.base64UrlAlphabet, .omitPaddingCharacter])
    }
}
