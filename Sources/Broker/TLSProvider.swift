public import IPC
public import NIOCore
import NIOEmbedded
import NIOSSL
import NIOTLS

/// The one seam between the broker and a TLS implementation, so swift-nio-ssl can be replaced
/// (by a system-OpenSSL handler, say) without touching the HTTP/WebSocket pipeline: it puts the
/// server-side TLS handlers at the front of a new connection's pipeline and says which inbound
/// user event means the handshake has finished.
///
/// A provider is built from the material the supervisor sent, off the event loop and before
/// `ready` where possible, and is immutable: a reload builds a new one, and connections that
/// already run keep the provider they started with.
public protocol TLSProvider: Sendable {
    /// Adds the handlers that terminate TLS on `channel`, before any other handler.
    func addServerHandlers(to channel: any Channel) throws
    /// Whether `event` (an inbound user event) reports a completed handshake.
    func isHandshakeCompletion(_ event: Any) -> Bool
}

/// ``TLSProvider`` on swift-nio-ssl (BoringSSL): TLS 1.2 and 1.3 only, ALPN `http/1.1`, ECDHE
/// with AEAD ciphers for TLS 1.2 (TLS 1.3 suites are BoringSSL's fixed, all-AEAD set).
/// Building the context needs no file: the server does not verify client certificates, so no
/// trust store is loaded.
public struct NIOSSLTLSProvider: TLSProvider {
    private let context: NIOSSLContext

    /// - Parameters:
    ///   - certificateChainPEM: the chain, leaf first, as PEM.
    ///   - privateKeyDER: the unencrypted private key as DER (PKCS#8, PKCS#1 or SEC1). BoringSSL
    ///     parses it into its own memory (which it wipes when it frees it); the one array that
    ///     swift-nio-ssl needs for that is wiped as soon as the key is built.
    public init(certificateChainPEM: [UInt8], privateKeyDER: borrowing SecretBytes) throws {
        let chain = try NIOSSLCertificate.fromPEMBytes(certificateChainPEM)
        var der = privateKeyDER.withUnsafeBytes { bytes in
            [UInt8](unsafeUninitializedCapacity: bytes.count) { buffer, initialized in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes)
                initialized = bytes.count
            }
        }
        defer { SecretBytes.wipe(&der) }
        let key = try NIOSSLPrivateKey(bytes: der, format: .der)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv13
        configuration.applicationProtocols = ["http/1.1"]
        configuration.cipherSuiteValues = [
            .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
        context = try NIOSSLContext(configuration: configuration)
    }

    /// Makes BoringSSL do its once-per-process lazy set-up now (call it before the sandbox and
    /// `ready`): the RNG's fork-safety page (`mmap`, a `madvise(…, -1)` probe expecting EINVAL,
    /// then `madvise(MADV_WIPEONFORK)`). It starts a client handshake in memory, which draws
    /// the client random; no socket and no file is involved.
    public static func prepareRuntime() throws {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none  // so no trust store is loaded
        let context = try NIOSSLContext(configuration: configuration)
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        _ = try channel.readOutbound(as: ByteBuffer.self)
    }

    public func addServerHandlers(to channel: any Channel) throws {
        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context), name: "tls")
    }

    public func isHandshakeCompletion(_ event: Any) -> Bool {
        if case .handshakeCompleted = event as? TLSUserEvent { return true }
        return false
    }
}

/// Closes a TLS connection whose handshake has not finished within the deadline (a client that
/// stalls mid-handshake holds nothing for long), and one whose handshake fails; removes itself
/// once the handshake is done.
final class TLSHandshakeDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let provider: any TLSProvider
    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?

    init(provider: any TLSProvider, timeout: TimeAmount) {
        self.provider = provider
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            bound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if provider.isHandshakeCompletion(event) {
            timer?.cancel()
            timer = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed handshake (plain HTTP on the TLS port, a protocol version or cipher we do not
        // take): this connection only.
        context.close(promise: nil)
    }
}
