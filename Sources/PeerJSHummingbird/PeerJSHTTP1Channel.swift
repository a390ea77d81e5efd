import HTTPTypes
public import HummingbirdCore
public import Logging
public import NIOCore
public import PeerJSKit

/// Hummingbird's HTTP/1 server with a ``PeerJSServer`` mounted at its base path: each
/// connection's first request line decides whether the PeerJS server or the app's router serves
/// it (``PeerJSServer/mount(_:otherwise:)``). Build it with ``HTTPServerBuilder/peerJS(_:configuration:)``.
public struct PeerJSHTTP1Channel: ServerChildChannel {
    public struct Value: ServerChildChannelValue {
        public let channel: any Channel
        let route: EventLoopFuture<PeerJSServer.Route<HTTP1Channel.Value>>
    }

    private let server: PeerJSServer
    private let http1: HTTP1Channel

    public init(server: PeerJSServer, responder: @escaping HTTPChannelHandler.Responder, configuration: HTTP1Channel.Configuration = .init()) {
        self.server = server
        self.http1 = HTTP1Channel(responder: Self.redirectingPeerJS(responder, server: server), configuration: configuration)
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let http1 = self.http1
        return channel.eventLoop.makeCompletedFuture {
            Value(channel: channel, route: server.mount(channel) { channel in http1.setup(channel: channel, logger: logger) })
        }
    }

    public func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.route.get() {
            case .peerJS:
                // Until it closes; a cancelled server task (not a graceful shutdown) closes it.
                let channel = value.channel
                try await withTaskCancellationHandler {
                    try await channel.closeFuture.get()
                } onCancel: {
                    channel.close(promise: nil)
                }
            case .other(let asyncChannel):
                await http1.handle(value: asyncChannel, logger: logger)
            }
        } catch {
            logger.trace("connection ended before its first request", metadata: ["error": "\(error)"])
        }
    }

    /// A request under the PeerJS base path on a keep-alive connection the app's router holds
    /// (a page's `fetch` of `/peerjs/peerjs/id` after loading `/`): `307` to itself with
    /// `Connection: close`, so the client asks again on a new connection, which the PeerJS
    /// server takes. Then the output is shut (RFC 9112 §9.6; NIO sends what is pending first),
    /// not the whole connection: a close with a body or a pipelined request unread could reset
    /// it before the client has read the `307`. (The target is under the base path, an
    /// origin-form path: no other host can be named in `Location`.)
    static func redirectingPeerJS(_ responder: @escaping HTTPChannelHandler.Responder, server: PeerJSServer) -> HTTPChannelHandler.Responder {
        { request, responseWriter, channel in
            let target = request.head.path ?? "/"
            guard server.serves(target: target) else {
                return try await responder(request, responseWriter, channel)
            }
            try await responseWriter.writeResponse(
                HTTPResponse(status: .temporaryRedirect, headerFields: [.location: target, .connection: "close", .contentLength: "0"]))
            try? await channel.close(mode: .output)
        }
    }
}

extension HTTPServerBuilder {
    /// Hummingbird's HTTP/1 server with `server` mounted at its base path:
    /// `Application(router: router, server: .peerJS(server), eventLoopGroupProvider: .shared(server.eventLoop))`.
    public static func peerJS(_ server: PeerJSServer, configuration: HTTP1Channel.Configuration = .init()) -> HTTPServerBuilder {
        .init { responder in PeerJSHTTP1Channel(server: server, responder: responder, configuration: configuration) }
    }
}
