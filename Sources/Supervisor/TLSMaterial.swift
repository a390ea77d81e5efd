import Glibc
import IPC
import Logging
import NIOSSL

/// Where the TLS private key and certificate chain live. Only the supervisor reads them, at start
/// and on SIGHUP (so a renewed certificate is picked up without a restart); the broker gets the
/// bytes over IPC.
/// - Parameters:
///   - keyPath: the private key, PEM (PKCS#8, PKCS#1 or SEC1; encrypted or not).
///   - certificatePath: the certificate chain, PEM, leaf first (certbot's `fullchain.pem`).
///   - passphrasePath: a file whose first line is the key's passphrase, for an encrypted key.
public struct TLSFiles: Sendable, Equatable {
    public var keyPath: String
    public var certificatePath: String
    public var passphrasePath: String?

    public init(keyPath: String, certificatePath: String, passphrasePath: String? = nil) {
        self.keyPath = keyPath
        self.certificatePath = certificatePath
        self.passphrasePath = passphrasePath
    }
}

/// A certificate chain and private key that were read and checked together (they parse, the key
/// is decrypted and matches the leaf certificate), in the form the broker takes: the chain as
/// PEM, the key as unencrypted DER.
///
/// The checks use swift-nio-ssl on the supervisor's own files — never on a byte a client sent —
/// so that every mistake is reported, naming the file, before anything listens.
struct TLSMaterial {
    var certificateChainPEM: [UInt8]
    var privateKeyDER: [UInt8]
    /// The leaf certificate's notAfter, seconds since the epoch.
    let notAfter: Int

    static let maxFileBytes = 1 << 20

    /// Reads and checks `files`; logs a warning for a certificate that has expired or is not
    /// valid yet (serving it is the operator's call), throws for anything that cannot work.
    static func load(_ files: TLSFiles, logger: Logger) throws(SupervisorError) -> TLSMaterial {
        let certificatePath = files.certificatePath
        let keyPath = files.keyPath
        let chainPEM = try readFile(certificatePath, what: "certificate file (--sslcert)")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(chainPEM)
        } catch {
            chain = []
        }
        guard let leaf = chain.first else {
            throw SupervisorError(.tls, "\(certificatePath) (--sslcert) holds no PEM certificate; it must contain `-----BEGIN CERTIFICATE-----` blocks, the server's certificate first")
        }

        var keyPEM = try readFile(keyPath, what: "private key file (--sslkey)")
        defer { TLSChunk.wipe(&keyPEM) }
        guard contains(keyPEM, "-----BEGIN ") else {
            throw SupervisorError(.tls, "\(keyPath) (--sslkey) is not a PEM private key; give a PEM file (PKCS#8, PKCS#1 or SEC1)")
        }
        let encrypted = contains(keyPEM, "ENCRYPTED")
        var passphrase: [UInt8] = []
        defer { TLSChunk.wipe(&passphrase) }
        if let passphrasePath = files.passphrasePath {
            passphrase = try readFile(passphrasePath, what: "passphrase file (--sslkey-passphrase-file)")
            if let newline = passphrase.firstIndex(where: { $0 == 0x0A || $0 == 0x0D }) {
                passphrase.withUnsafeMutableBytes { buffer in
                    explicit_bzero(buffer.baseAddress! + newline, buffer.count - newline)
                }
                passphrase.removeSubrange(newline...)
            }
        } else if encrypted {
            throw SupervisorError(.tls, "\(keyPath) (--sslkey) is encrypted; give its passphrase with --sslkey-passphrase-file, or decrypt the key")
        }

        let key: NIOSSLPrivateKey
        do {
            // Always with a callback: without one BoringSSL would prompt on the terminal.
            let secret = passphrase
            key = try NIOSSLPrivateKey(bytes: keyPEM, format: .pem) { (set: NIOSSLPassphraseSetter<[UInt8]>) in set(secret) }
        } catch {
            if encrypted {
                throw SupervisorError(.tls, "cannot decrypt \(keyPath) (--sslkey) with the passphrase in \(files.passphrasePath ?? "?"): wrong passphrase, or an unsupported encryption")
            }
            throw SupervisorError(.tls, "\(keyPath) (--sslkey) holds no usable private key; give a PEM key (PKCS#8, PKCS#1 or SEC1): \(error)")
        }

        // A context with both fails when the key does not belong to the leaf certificate.
        do {
            _ = try NIOSSLContext(configuration: .makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw SupervisorError(.tls, "the private key in \(keyPath) (--sslkey) does not match the certificate in \(certificatePath) (--sslcert); give the key the certificate was issued for (\(error))")
        }
        let keyDER: [UInt8]
        do {
            keyDER = try key.derBytes
        } catch {
            throw SupervisorError(.tls, "cannot serialise the private key from \(keyPath): \(error)")
        }

        guard chainPEM.count + keyDER.count <= Int(TLSChunk.maxCount) * TLSChunk.maxDataLength - TLSChunk.maxDataLength else {
            throw SupervisorError(.tls, "\(certificatePath) (--sslcert) is too large (\(chainPEM.count) bytes) to hand to the broker; give only the server's certificate and its intermediates")
        }
        let now = Int(time(nil))
        let notAfter = Int(leaf.notValidAfter)
        if notAfter < now {
            logger.warning("the certificate in \(certificatePath) expired on \(utcText(notAfter)); clients will refuse it until it is renewed (then send SIGHUP)")
        } else if Int(leaf.notValidBefore) > now {
            logger.warning("the certificate in \(certificatePath) is not valid before \(utcText(Int(leaf.notValidBefore))); clients will refuse it until then")
        } else {
            logger.info("TLS certificate \(certificatePath): \(chain.count) certificate(s), valid until \(utcText(notAfter))")
        }
        return TLSMaterial(certificateChainPEM: chainPEM, privateKeyDER: keyDER, notAfter: notAfter)
    }

    /// The `tlsChunk` payloads of this material as `generation`.
    func chunks(generation: UInt32) throws(SupervisorError) -> [TLSChunk] {
        do {
            return try TLSChunk.split(generation: generation, certificateChainPEM: certificateChainPEM, privateKeyDER: privateKeyDER)
        } catch {
            throw SupervisorError(.tls, "\(error.message)")
        }
    }

    /// Zeroes the key bytes (the material is being replaced).
    mutating func wipe() {
        TLSChunk.wipe(&privateKeyDER)
        privateKeyDER = []
    }

    private static func readFile(_ path: String, what: String) throws(SupervisorError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else {
            throw SupervisorError(.tls, "cannot read the \(what) \(path): \(SupervisorError.errnoText())")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        defer { TLSChunk.wipe(&chunk) }
        while bytes.count <= maxFileBytes {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                TLSChunk.wipe(&bytes)
                throw SupervisorError(.tls, "cannot read the \(what) \(path): \(SupervisorError.errnoText())")
            }
            if count == 0 {
                guard !bytes.isEmpty else { throw SupervisorError(.tls, "the \(what) \(path) is empty") }
                return bytes
            }
            if bytes.capacity < bytes.count + count {
                // Grow by hand so the old buffer is wiped, not just freed.
                var bigger: [UInt8] = []
                bigger.reserveCapacity(max(2 * bytes.capacity, bytes.count + count))
                bigger += bytes
                TLSChunk.wipe(&bytes)
                bytes = bigger
            }
            bytes += chunk[0..<count]
        }
        TLSChunk.wipe(&bytes)
        throw SupervisorError(.tls, "the \(what) \(path) is larger than 1 MiB; is it the right file?")
    }

    private static func contains(_ haystack: [UInt8], _ needle: String) -> Bool {
        let pattern = Array(needle.utf8)
        guard haystack.count >= pattern.count else { return false }
        for start in 0...(haystack.count - pattern.count) where haystack[start] == pattern[0] {
            if haystack[start..<(start + pattern.count)].elementsEqual(pattern) { return true }
        }
        return false
    }

    /// `2026-11-25 14:30:00 UTC`, without Foundation.
    static func utcText(_ seconds: Int) -> String {
        var value = time_t(seconds)
        var parts = tm()
        gmtime_r(&value, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S UTC", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
