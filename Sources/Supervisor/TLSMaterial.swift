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
///
/// The key is kept (a restarted broker needs it) in ``SecretBytes``: one locked, never-dumped
/// copy, wiped when this material is replaced; every other copy made on the way (the PEM file
/// as read, the passphrase, the DER from BoringSSL, each chunk and frame) is wiped once used.
/// A class because it holds that single copy.
final class TLSMaterial {
    let certificateChainPEM: [UInt8]
    private(set) var privateKeyDER: SecretBytes
    /// The leaf certificate's notAfter, seconds since the epoch.
    let notAfter: Int

    private init(certificateChainPEM: [UInt8], privateKeyDER: consuming SecretBytes, notAfter: Int) {
        self.certificateChainPEM = certificateChainPEM
        self.privateKeyDER = privateKeyDER
        self.notAfter = notAfter
    }

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
        var keyDER: [UInt8]
        do {
            keyDER = try key.derBytes
        } catch {
            throw SupervisorError(.tls, "cannot serialise the private key from \(keyPath): \(error)")
        }
        let keyBytes: SecretBytes
        do {
            keyBytes = try SecretBytes(wiping: &keyDER)
        } catch {
            throw SupervisorError(.tls, "cannot keep the private key from \(keyPath) in locked memory: \(error)")
        }

        guard chainPEM.count + keyBytes.count <= Int(TLSChunk.maxCount) * TLSChunk.maxDataLength - TLSChunk.maxDataLength else {
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
        if !keyBytes.isLocked {
            logger.warning("the private key could not be locked in memory (mlock: raise LimitMEMLOCK= / ulimit -l); it may be swapped out")
        }
        return TLSMaterial(certificateChainPEM: chainPEM, privateKeyDER: keyBytes, notAfter: notAfter)
    }

    /// The `tlsChunk` payloads of this material as `generation`; the key chunks' data is a copy
    /// of the key, to be wiped once sent.
    func chunks(generation: UInt32) throws(SupervisorError) -> [TLSChunk] {
        do {
            return try TLSChunk.split(generation: generation, certificateChainPEM: certificateChainPEM, privateKeyDER: privateKeyDER)
        } catch {
            throw SupervisorError(.tls, "\(error.message)")
        }
    }

    /// Zeroes the key bytes now (the material is being replaced; dropping it does the same).
    func wipe() {
        privateKeyDER.removeAll()
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

/// Which TLS material the broker has really taken, so the supervisor never believes a
/// certificate is in force that the broker did not take (issue 16 item 7): the broker answers
/// every whole generation of `tlsChunk` frames with a `tlsAck`.
///
/// `current` is the newest material the supervisor loaded and checked; it is what a (re)started
/// broker is sent, whatever the running broker answered. The broker's answers move only
/// `inForce`: a broker that refuses (or a hand-off that fails half-way) keeps serving what it
/// had, and the supervisor says so. A broker cannot make the supervisor go back to an older key
/// (a compromised broker could otherwise undo the key rotation made because of it), and the
/// supervisor holds one copy of one key. An answer to a generation that was not sent to this
/// broker, or a second answer, is a protocol violation (the caller restarts the broker).
struct TLSHandoff {
    /// How long the broker has to answer a generation before the supervisor logs an error
    /// (and keeps waiting: a late answer still counts).
    static let answerDeadlineMs: Int64 = 5000
    /// At most this many generations wait for their answers (SIGHUPs faster than the broker
    /// answers); an older one is forgotten, and its answer is then a protocol violation.
    static let maxAwaited = 8

    private(set) var current: TLSMaterial?
    private(set) var currentGeneration: UInt32 = 0
    /// The generation the running broker said it took last; nil before its first answer.
    private(set) var inForce: UInt32?
    /// Generations sent to the running broker whole and not answered yet, oldest first.
    private(set) var awaited: [UInt32] = []
    /// When the answer for `current` is due (monotonic ms), while one is awaited and not late.
    private(set) var answerDue: Int64?

    /// A newly loaded (and checked) material becomes `current` under a new generation number;
    /// the one it replaces is wiped (the broker holds its own copy of what it serves).
    mutating func offer(_ material: TLSMaterial) {
        current?.wipe()
        current = material
        currentGeneration &+= 1
        answerDue = nil
    }

    /// A new broker process: nothing is in force in it and nothing is awaited from it.
    mutating func brokerStarted() {
        inForce = nil
        awaited.removeAll()
        answerDue = nil
    }

    /// `current` has been sent whole; its answer is due within the deadline.
    mutating func sent(now: Int64) {
        awaited.removeAll { $0 == currentGeneration }
        awaited.append(currentGeneration)
        if awaited.count > Self.maxAwaited { awaited.removeFirst(awaited.count - Self.maxAwaited) }
        answerDue = now + Self.answerDeadlineMs
    }

    /// The broker's answer (`tlsAck`). Returns false for an answer the supervisor did not ask
    /// for (a generation not sent to this broker, or one already answered).
    mutating func answer(_ ack: TLSAck, brokerPID: pid_t?, logger: Logger) -> Bool {
        guard let index = awaited.firstIndex(of: ack.generation) else { return false }
        awaited.remove(at: index)
        if ack.generation == currentGeneration { answerDue = nil }
        let broker = brokerPID.map { "broker pid=\($0)" } ?? "the broker"
        let serving = inForce.map { "it keeps serving generation \($0)" } ?? "it serves no earlier generation"
        if ack.accepted {
            let reloaded = inForce != nil
            if ack.generation >= (inForce ?? 0) { inForce = ack.generation }
            if ack.generation != currentGeneration {
                logger.info("\(broker) took TLS generation \(ack.generation), which generation \(currentGeneration) has replaced")
                return true
            }
            let until = current.map { " (certificate valid until \(TLSMaterial.utcText($0.notAfter)))" } ?? ""
            let text = "\(broker) took TLS generation \(ack.generation)\(until); new handshakes use it"
            if reloaded { logger.notice("\(text)") } else { logger.info("\(text)") }
        } else {
            logger.error("\(broker) refused TLS generation \(ack.generation): \(ack.reason); \(serving); a restarted broker is sent generation \(currentGeneration)")
        }
        return true
    }

    /// Sending `current` failed (possibly half-way): the broker did not take it.
    mutating func sendFailed(_ error: IPCError, logger: Logger) {
        answerDue = nil
        let serving = inForce.map { "generation \($0) stays in force" } ?? "no certificate is known to be in force"
        logger.error("could not hand TLS generation \(currentGeneration) to the broker (\(error)); \(serving); a restarted broker is sent generation \(currentGeneration), or send SIGHUP again")
    }

    /// Logs once when the answer is late; the supervisor keeps believing the previous
    /// generation is in force until the answer comes.
    mutating func checkDeadline(now: Int64, logger: Logger) {
        guard let due = answerDue, now >= due else { return }
        answerDue = nil
        let kept = inForce.map { "generation \($0) stays in force as far as the supervisor knows" } ?? "no certificate is known to be in force"
        logger.error("the broker has not answered TLS generation \(currentGeneration) within \(Self.answerDeadlineMs / 1000) s; \(kept) (an answer that comes later still counts)")
    }
}
