import AuthHelper
import AuthJWT
import Crypto
import ExtrasBase64
import FuzzSupport

/// The HS256 secret every fuzzed token is checked against (the seeds are signed with it).
let secret = "fuzz-jwt-secret-0123456789abcdefghijkl"
let verifier = try! JWTVerifier(keyFile: secret + "\n")

/// libFuzzer's entry for `--auth-jwt-key`. The first byte picks the input's meaning (modulo 3):
/// 0, a token as a client sends it, checked for `alice` in room `peerjs` — an allow must carry
/// a correct HS256 signature over an `"alg":"HS256"` header; 1, a header and a payload (JSON,
/// split at the first NUL byte) that this target signs with the secret, so the claims reader
/// and the time checks are reached; 2, a key file (PEM or secret), loaded and primed.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzJWT(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let all = UnsafeRawBufferPointer(start: data, count: size)
    guard let selector = all.first else { return 0 }
    let input = Array(all.dropFirst())
    switch selector % 3 {
    case 0:
        let token = String(decoding: input, as: UTF8.self)
        if verifier.denial(token: token, id: "alice", key: "peerjs") == nil {
            precondition(isSignedWithSecret(token), "a token without a valid HS256 signature was allowed: \(token)")
        }
    case 1:
        let cut = input.firstIndex(of: 0) ?? input.count
        let header = base64URL(Array(input[..<cut]))
        let payload = base64URL(Array(input[min(cut + 1, input.count)...]))
        let signed = header + "." + payload
        let mac = HMAC<SHA256>.authenticationCode(for: Array(signed.utf8), using: key)
        let token = signed + "." + base64URL(Array(mac))
        _ = verifier.denial(token: token, id: "alice", key: "peerjs")
    default:
        guard let loaded = try? JWTVerifier(keyFile: String(decoding: input, as: UTF8.self)) else { return 0 }
        loaded.prime()
    }
    return 0
}

@main
enum FuzzJWT {
    static func main() { FuzzMain.run(fuzzJWT) }
}

let key = SymmetricKey(data: Array(secret.utf8))

let base64URLOptions: Base64.DecodingOptions = [.base64UrlAlphabet, .omitPaddingCharacter]

func base64URL(_ bytes: [UInt8]) -> String {
    Base64.encodeToString(bytes: bytes, options: [.base64UrlAlphabet, .omitPaddingCharacter])
}

/// Whether `token` is `header.payload.signature` with an HS256 header and the secret's MAC, checked
/// here without the verifier's code.
func isSignedWithSecret(_ token: String) -> Bool {
    let parts = token.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 3,
        let header = try? Base64.decode(string: String(parts[0]), options: base64URLOptions),
        let fields = JSONLine.parseObject(String(decoding: header, as: UTF8.self)), fields["alg"] == .string("HS256"),
        let signature = try? Base64.decode(string: String(parts[2]), options: base64URLOptions)
    else { return false }
    let mac = HMAC<SHA256>.authenticationCode(for: Array((parts[0] + "." + parts[1]).utf8), using: key)
    return Array(mac) == signature
}
