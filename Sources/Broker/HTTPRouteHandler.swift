import NIOCore
import NIOHTTP1
import PeerProtocol

/// Serves the HTTP routes of PROTOCOL.md §4 (`GET {path}`, `{key}/id`, `{key}/peers`, CORS
/// pre-flight) and refuses WebSocket upgrades on any path but `{path}peerjs` with 400. Mounted in
/// an app (PeerJSKit), any request outside `{path}` — upgrades and bodies included — gets `307`
/// to itself with `Connection: close` instead (see `redirectElsewhere`).
///
/// Every state a client can hold here has an end (`--handshake_timeout`): one deadline runs from
/// the connection's start (the handshake handler's, passed in) and again from the moment each
/// response has been written out, and it is never cancelled while the handler is in place. So a
/// request must arrive complete, and a keep-alive connection must send its next one, and a
/// client must read each response, within that time; otherwise the connection is closed.
///
/// No route takes a body: a request announcing one (`Content-Length` above 0 or any
/// `Transfer-Encoding`) gets `413` at its head and the connection ends without reading it.
/// One response at a time is in the channel: a request that arrives (pipelined) while the
/// previous response has not yet left waits for it, and NIO's pipeline handler reads no further
/// meanwhile, so a client that sends requests and does not read holds at most one read's worth of
/// requests and one response in the broker.
final class HTTPRouteHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: BrokerState
    private let address: String
    /// The first request's deadline; nil: `--handshake_timeout` from when the handler is added.
    private let firstDeadline: NIODeadline?
    private var request: HTTPRequestHead?
    /// A complete request waiting for the response before it to be written out.
    private var waiting: HTTPRequestHead?
    /// A response has been written and has not yet left for the socket.
    private var writing = false
    /// A 413 was sent: the rest of that request is ignored until the connection ends.
    private var refused = false
    private var deadline: Scheduled<Void>?

    init(state: BrokerState, address: String = "?", deadline: NIODeadline? = nil) {
        self.state = state
        self.address = address
        self.firstDeadline = deadline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        armDeadline(firstDeadline ?? context.eventLoop.now + .milliseconds(state.configuration.handshakeTimeoutMs), context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    private func armDeadline(_ when: NIODeadline, context: ChannelHandlerContext) {
        deadline?.cancel()
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(deadline: when) {
            bound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            if isElsewhere(head), waiting == nil {
                // Now (after any response being written, before none waiting): a body is not waited for.
                return redirectElsewhere(head, context: context)
            }
            if Self.announcesBody(head), !isElsewhere(head) {
                refused = true
                return refuseBody(head, context: context)
            }
            request = head
        case .body:
            break  // a request with a body is refused at its head; one for the app's paths is dropped
        case .end:
            guard let head = request else { return }
            request = nil
            if writing {
                waiting = head
            } else {
                respond(to: head, context: context)
            }
        }
    }

    /// Past `--output_limit` bytes waiting for this client: it is closed (``OutputLimit``).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        OutputLimit.closeIfStuck(context.channel, address: address, state: state)
        context.fireChannelWritabilityChanged()
    }

    /// Whether the request says a body follows (RFC 9112 §6.3): any `Transfer-Encoding`, or a
    /// `Content-Length` other than 0.
    static func announcesBody(_ head: HTTPRequestHead) -> Bool {
        if head.headers.contains(name: "transfer-encoding") { return true }
        return head.headers[canonicalForm: "content-length"].contains { $0 != "0" }
    }

    /// `413`, `Connection: close`; once it is out the output is shut and the deadline ends the
    /// connection (a close with the body unread would reset it, and the client might lose the 413).
    private func refuseBody(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(ProtocolText.payloadTooLarge.utf8.count))
        headers.add(name: "Connection", value: "close")
        let response = HTTPResponseHead(version: head.version, status: .payloadTooLarge, headers: headers)
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: ProtocolText.payloadTooLarge)))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            bound.value.close(mode: .output, promise: nil)
        }
    }

    /// Mounted in an app (``BrokerConfiguration/mounted``), a request for one of the app's paths
    /// on a keep-alive connection this server holds: `307` to the same target with
    /// `Connection: close`, so the client asks again on a new connection, which the app's router
    /// takes. Then like a `413`: the output is shut and the deadline ends the connection.
    ///
    /// Only an origin-form target (starting with one `/`, no `\` anywhere) is sent back
    /// as it is: `//evil.example/x` in `Location` would send a browser to another host. Any
    /// other target gets `400` and the same close.
    private func redirectElsewhere(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        refused = true
        var headers = HTTPHeaders()
        let safe = Self.isOriginForm(head.uri)
        if safe { headers.add(name: "Location", value: head.uri) }
        headers.add(name: "Content-Length", value: "0")
        headers.add(name: "Connection", value: "close")
        let status: HTTPResponseStatus = safe ? .temporaryRedirect : .badRequest
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            bound.value.close(mode: .output, promise: nil)
        }
    }

    /// `/a/b?c`: a path on this host, which a browser cannot read as another host's.
    static func isOriginForm(_ target: String) -> Bool {
        target.hasPrefix("/") && !target.hasPrefix("//") && !target.utf8.contains(UInt8(ascii: "\\"))
    }

    /// Whether `head` is for one of the app's paths (mounted only): it gets a `307` when its
    /// turn comes, after the responses before it.
    private func isElsewhere(_ head: HTTPRequestHead) -> Bool {
        state.configuration.mounted && !state.configuration.serves(target: head.uri)
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        if isElsewhere(head) { return redirectElsewhere(head, context: context) }
        let configuration = state.configuration
        var headers = HTTPHeaders()
        let origin = head.headers.first(name: "origin")
        if let origin, configuration.corsOrigins.isEmpty || configuration.corsOrigins.contains(origin) {
            headers.add(name: "Access-Control-Allow-Origin", value: origin)
        }
        headers.add(name: "Vary", value: "Origin")

        if head.headers.contains(name: "upgrade") {
            // A WebSocket upgrade that the upgrader did not take: wrong path (§14: 400).
            return send(.badRequest, body: ProtocolText.badRequest, type: "text/plain; charset=utf-8", headers: headers,
                        keepAlive: false, head: head, context: context)
        }
        if head.method == .OPTIONS {
            headers.add(name: "Access-Control-Allow-Methods", value: "GET,HEAD,PUT,PATCH,POST,DELETE")
            if let requested = head.headers.first(name: "access-control-request-headers") {
                headers.add(name: "Access-Control-Allow-Headers", value: requested)
                headers.add(name: "Vary", value: "Access-Control-Request-Headers")
            }
            return send(.noContent, body: nil, type: nil, headers: headers, keepAlive: head.isKeepAlive, head: head,
                        context: context)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return notFound(head, headers, context)
        }
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        let base = configuration.basePath
        if path == base || path + "/" == base {
            return send(.ok, body: ProtocolText.serverInfo, type: "application/json; charset=utf-8", headers: headers,
                        keepAlive: head.isKeepAlive, head: head, context: context)
        }
        guard path.hasPrefix(base) else { return notFound(head, headers, context) }
        let parts = path.dropFirst(base.count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[1] == "id" || parts[1] == "peers" else {
            return notFound(head, headers, context)
        }
        let key = RegistrationRequest.formDecode(parts[0])
        let engine = state.engine
        guard engine.settings.keys.contains(key) else {
            return send(.unauthorized, body: ProtocolText.invalidKey, type: "text/plain; charset=utf-8",
                        headers: headers, keepAlive: head.isKeepAlive, head: head, context: context)
        }
        if parts[1] == "id" {
            return send(.ok, body: engine.newID(key: key), type: "text/html; charset=utf-8", headers: headers,
                        keepAlive: head.isKeepAlive, head: head, context: context)
        }
        guard engine.settings.allowDiscovery else {
            return send(.unauthorized, body: ProtocolText.unauthorized, type: "text/plain; charset=utf-8",
                        headers: headers, keepAlive: head.isKeepAlive, head: head, context: context)
        }
        let list = "[" + engine.peers(key: key).map(JSONText.quoted).joined(separator: ",") + "]"
        send(.ok, body: list, type: "application/json; charset=utf-8", headers: headers, keepAlive: head.isKeepAlive,
             head: head, context: context)
    }

    private func notFound(_ head: HTTPRequestHead, _ headers: HTTPHeaders, _ context: ChannelHandlerContext) {
        send(.notFound, body: ProtocolText.notFound, type: "text/plain; charset=utf-8", headers: headers,
             keepAlive: head.isKeepAlive, head: head, context: context)
    }

    private func send(
        _ status: HTTPResponseStatus, body: String?, type: String?, headers: HTTPHeaders, keepAlive: Bool,
        head: HTTPRequestHead, context: ChannelHandlerContext
    ) {
        var headers = headers
        if let type { headers.add(name: "Content-Type", value: type) }
        let bytes = body.map { Array($0.utf8) } ?? []
        headers.add(name: "Content-Length", value: String(bytes.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let response = HTTPResponseHead(version: head.version, status: status, headers: headers)
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        if head.method != .HEAD, !bytes.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        writing = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { result in
            let (handler, context) = bound.value
            handler.written(result, keepAlive: keepAlive, context: context)
        }
    }

    /// A response has left for the socket (or failed): a keep-alive connection gets a fresh
    /// deadline and its waiting request is answered — on the next turn of the loop, since a
    /// write that completes at once would otherwise answer a long pipeline recursively.
    private func written(_ result: Result<Void, any Error>, keepAlive: Bool, context: ChannelHandlerContext) {
        writing = false
        guard case .success = result, keepAlive else { return context.close(promise: nil) }
        armDeadline(context.eventLoop.now + .milliseconds(state.configuration.handshakeTimeoutMs), context: context)
        guard waiting != nil else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            guard let head = handler.waiting, !handler.writing, context.channel.isActive else { return }
            handler.waiting = nil
            handler.respond(to: head, context: context)
        }
    }
}

/// JSON string quoting for the few strings the broker writes itself (ids in `/peers`).
enum JSONText {
    static func quoted(_ text: String) -> String {
        var out: [UInt8] = []
        EnvelopeWriter.appendJSONString(text, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
