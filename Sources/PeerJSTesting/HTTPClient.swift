import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
public import NIOSSL
import NIOTLS

/// An HTTP response as the tests see it.
public struct HTTPResponse: Sendable, CustomStringConvertible {
    /// The status code.
    public let status: Int
    /// Header fields in arrival order.
    public let headers: [(String, String)]
    /// The body bytes.
    public let body: [UInt8]

    /// The body as UTF-8 text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The first value of header `name` (case-insensitive), or `nil`.
    /// - Parameters:
    ///   - name: header name.
    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    /// Every value of header `name` (case-insensitive).
    /// - Parameters:
    ///   - name: header name.
    public func headerValues(_ name: String) -> [String] {
        headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1)
    }

    /// The body parsed as JSON.
    public func json() throws -> JSONValue {
        try JSONValue.parse(body)
    }

    public var description: String {
        "HTTP \(status) \(headers.map { "\($0.0): \($0.1)" }.joined(separator: "; ")) body=\(text.prefix(300))"
    }
}

final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    let promise: EventLoopPromise<HTTPResponse>
    var head: HTTPResponseHead?
    var body: [UInt8] = []
    var done = false

    init(promise: EventLoopPromise<HTTPResponse>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body(let buffer): body += buffer.readableBytesView
        case .end:
            guard !done, let head else { return }
            done = true
            promise.succeed(
                HTTPResponse(
                    status: Int(head.status.code),
                    headers: head.headers.map { ($0.name, $0.value) },
                    body: body
                )
            )
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise.fail(HarnessError("connection closed before a complete HTTP response"))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            promise.fail(HarnessError("HTTP error: \(error)"))
        }
        context.close(promise: nil)
    }
}

/// A minimal HTTP/1.1 client on SwiftNIO for the server's HTTP routes (one request per connection).
public enum HTTPClient {
    /// Sends one request and returns the complete response.
    /// - Parameters:
    ///   - method: e.g. `GET`, `OPTIONS`.
    ///   - host: server address.
    ///   - port: server port.
    ///   - path: request target including any query string.
    ///   - headers: extra request headers (e.g. `Origin`).
    ///   - timeout: bound for the whole exchange.
    public static func request(
        _ method: String = "GET",
        host: String = "127.0.0.1",
        port: Int,
        path: String,
        headers: [(String, String)] = [],
        timeout: Duration = .seconds(5)
    ) async throws -> HTTPResponse {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let promise = loop.makePromise(of: HTTPResponse.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(5))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            // A refused connect never makes the channel active: complete the promise here, or the
            // collector would drop it unfulfilled (NIO traps on that in debug builds).
            promise.fail(error)
            throw error
        }
        var requestHeaders = HTTPHeaders()
        requestHeaders.add(name: "Host", value: "\(host):\(port)")
        for (name, value) in headers { requestHeaders.add(name: name, value: value) }
        if method == "POST" || method == "PUT" { requestHeaders.add(name: "Content-Length", value: "0") }
        let head = HTTPRequestHead(
            version: .http1_1,
            method: HTTPMethod(rawValue: method),
            uri: path,
            headers: requestHeaders
        )
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = loop.scheduleTask(in: .milliseconds(Int64(timeout.components.seconds * 1000))) {
            promise.fail(HarnessError("no complete HTTP response to \(method) \(path) within \(timeout)"))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    /// `GET path`.
    /// - Parameters:
    ///   - port: server port.
    ///   - path: request target.
    ///   - headers: extra request headers.
    public static func get(port: Int, _ path: String, headers: [(String, String)] = []) async throws -> HTTPResponse {
        try await request("GET", port: port, path: path, headers: headers)
    }
}

final class RawCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let inbox: Inbox<RawTCPConnection.Event>
    let received: Locked<[UInt8]>
    let tls: Locked<RawTCPConnection.TLSState>

    init(inbox: Inbox<RawTCPConnection.Event>, received: Locked<[UInt8]>, tls: Locked<RawTCPConnection.TLSState>) {
        self.inbox = inbox
        self.received = received
        self.tls = tls
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let negotiated) = event as? TLSUserEvent {
            tls.withLock { $0 = .done(negotiated) }
            inbox.push(.handshake)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Array(unwrapInboundIn(data).readableBytesView)
        received.withLock { $0 += bytes }
        inbox.push(.data(bytes))
    }

    func channelInactive(context: ChannelHandlerContext) {
        inbox.push(.end, sticky: true)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        tls.withLock { if case .pending = $0 { $0 = .failed("\(error)") } }
        context.close(promise: nil)  // e.g. connection reset: counts as closed
    }
}

/// A TCP connection, with TLS when asked, that sends and receives bytes as they are: for
/// misbehaving clients (huge headers, silence, garbage), for HTTP by hand, and for what a TLS
/// test asks of the handshake (the ALPN protocol, the certificate served).
public final class RawTCPConnection: Sendable {
    enum Event: Sendable {
        case data([UInt8])
        case handshake
        case end
    }

    enum TLSState: Sendable {
        case none
        case pending
        case done(String?)
        case failed(String)
    }

    private let channel: any Channel
    private let inbox: Inbox<Event>
    private let receivedBox: Locked<[UInt8]>
    private let tlsState: Locked<TLSState>

    private init(channel: any Channel, inbox: Inbox<Event>, received: Locked<[UInt8]>, tls: Locked<TLSState>) {
        self.channel = channel
        self.inbox = inbox
        self.receivedBox = received
        self.tlsState = tls
    }

    deinit {
        channel.close(promise: nil)
    }

    /// Connects to `host:port`, and starts a TLS handshake when `tls` is given.
    /// - Parameters:
    ///   - host: server address.
    ///   - port: server port.
    ///   - tls: the client's TLS configuration, or nil for plain TCP.
    ///   - serverHostname: the name sent (SNI) and checked against the certificate.
    public static func connect(
        host: String = "127.0.0.1", port: Int, tls: TLSConfiguration? = nil, serverHostname: String = "localhost"
    ) async throws -> RawTCPConnection {
        let inbox = Inbox<Event>()
        let received = Locked<[UInt8]>([])
        let state = Locked<TLSState>(tls == nil ? .none : .pending)
        let context = try tls.map { try NIOSSLContext(configuration: $0) }
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(RawCollector(inbox: inbox, received: received, tls: state))
                }
            }
            .connect(host: host, port: port).get()
        return RawTCPConnection(channel: channel, inbox: inbox, received: received, tls: state)
    }

    /// Waits (bounded) for the TLS handshake; returns the ALPN protocol negotiated, throws when
    /// the handshake failed or the connection ended first.
    public func handshake(timeout: Duration = .seconds(10)) async throws -> String? {
        let deadline = ContinuousClock.now + timeout
        while true {
            switch tlsState.current {
            case .none: throw HarnessError("not a TLS connection")
            case .done(let negotiated): return negotiated
            case .failed(let why): throw HarnessError("TLS handshake failed: \(why)")
            case .pending: break
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, let event = await inbox.pop(timeout: remaining) else {
                throw HarnessError("no TLS handshake within \(timeout)")
            }
            if case .end = event, case .pending = tlsState.current {
                throw HarnessError("TLS handshake failed: the connection ended")
            }
        }
    }

    /// The certificate the server presented, after the handshake.
    public func peerCertificate() async throws -> NIOSSLCertificate? {
        _ = try await handshake()
        return try await channel.nioSSL_peerCertificate().get()
    }

    /// `GET path` with `Connection: close`, read to the end of the connection (bounded).
    public func httpGet(_ path: String, timeout: Duration = .seconds(10)) async throws -> (status: Int, body: String) {
        if let error = await send(Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)) {
            throw HarnessError("GET \(path): \(error)")
        }
        guard await waitForEOF(timeout: timeout) else { throw HarnessError("GET \(path): connection still open after \(timeout)") }
        let text = String(decoding: received, as: UTF8.self)
        guard let head = text.range(of: "\r\n\r\n"), text.hasPrefix("HTTP/1.1 "), let status = Int(text.dropFirst(9).prefix(3)) else {
            throw HarnessError("GET \(path): not an HTTP response: \(text.prefix(200))")
        }
        return (status, String(text[head.upperBound...]))
    }

    /// Writes bytes; errors (the server may already have closed) are returned, not thrown.
    /// - Parameters:
    ///   - bytes: what to send.
    @discardableResult
    public func send(_ bytes: [UInt8]) async -> (any Error)? {
        do {
            try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
            return nil
        } catch {
            return error
        }
    }

    /// Everything received so far.
    public var received: [UInt8] { receivedBox.current }

    /// Waits until the server ends the connection; returns `true` if it did within `timeout`.
    /// - Parameters:
    ///   - timeout: bound of the wait.
    public func waitForEOF(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, let event = await inbox.pop(timeout: remaining) else { return false }
            if case .end = event { return true }
        }
    }

    /// Waits until the received bytes satisfy `predicate` or the connection ends; returns whether the predicate held.
    /// - Parameters:
    ///   - timeout: bound of the wait.
    ///   - predicate: the test on all bytes received so far.
    public func waitForData(timeout: Duration, until predicate: ([UInt8]) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if predicate(received) { return true }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, let event = await inbox.pop(timeout: remaining) else { return predicate(received) }
            if case .end = event { return predicate(received) }
        }
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }
}
