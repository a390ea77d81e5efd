import NIOCore
import NIOHTTP1
import PeerProtocol

/// Serves the HTTP routes of PROTOCOL.md §4 (`GET {path}`, `{key}/id`, `{key}/peers`, CORS
/// pre-flight) and refuses WebSocket upgrades on any path but `{path}peerjs` with 400. It also
/// closes connections that stay idle or never finish a request (`handshake_timeout`).
final class HTTPRouteHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: BrokerState
    private var request: HTTPRequestHead?
    private var idleTimer: Scheduled<Void>?

    init(state: BrokerState) {
        self.state = state
    }

    func handlerAdded(context: ChannelHandlerContext) {
        armIdleTimer(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
    }

    private func armIdleTimer(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        let timeout = TimeAmount.milliseconds(state.configuration.handshakeTimeoutMs)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: timeout) {
            bound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
            idleTimer?.cancel()
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let configuration = state.configuration
        var headers = HTTPHeaders()
        let origin = head.headers.first(name: "origin")
        if let origin, configuration.corsOrigins.isEmpty || configuration.corsOrigins.contains(origin) {
            headers.add(name: "Access-Control-Allow-Origin", value: origin)
        }
        headers.add(name: "Vary", value: "Origin")

        if head.headers.contains(name: "upgrade") {
            // A WebSocket upgrade that the upgrader did not take: wrong path (§14: 400).
            return send(.badRequest, body: "Bad Request", type: "text/plain; charset=utf-8", headers: headers,
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
        send(.notFound, body: "Not Found", type: "text/plain; charset=utf-8", headers: headers,
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
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if keepAlive {
            armIdleTimer(context: context)
        } else {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in bound.value.close(promise: nil) }
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
