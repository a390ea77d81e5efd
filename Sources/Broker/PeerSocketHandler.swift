import Logging
import NIOCore
import NIOWebSocket
import PeerProtocol

/// One registered (or registering) PeerJS WebSocket: hands text and binary messages to the
/// engine, answers pings, counts pongs as signs of life, and tells the engine when it closes.
final class PeerSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let state: BrokerState
    private let connection: ConnectionID
    private var closing = false

    init(state: BrokerState, connection: ConnectionID) {
        self.state = state
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            // E3: a binary frame holding a JSON message is handled like text.
            var message = frame.data
            if let key = frame.maskKey { message.unmaskWebSocketPayload(key) }
            message.withUnsafeReadableBytes { state.engine.receive($0, from: connection) }
        case .ping:
            state.engine.touch(connection)
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            state.engine.touch(connection)
        case .connectionClose:
            guard !closing else { return }
            closing = true
            // Echo the client's close code, then close the TCP connection.
            var data = frame.unmaskedData
            let code = data.readSlice(length: 2) ?? context.channel.allocator.buffer(capacity: 0)
            let reply = WebSocketFrame(fin: true, opcode: .connectionClose, data: code)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(reply)).whenComplete { _ in bound.value.close(promise: nil) }
        default:
            break
        }
    }

    /// The end of a read burst: send what the burst relayed, one flush per destination.
    func channelReadComplete(context: ChannelHandlerContext) {
        state.connections.flush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.connections.remove(connection)
        state.engine.connectionClosed(connection)
        state.connections.flush()
        context.fireChannelInactive()
    }

    /// Fragmentation errors from the aggregator: too large a message is 1009, any other
    /// misuse of continuation frames is a protocol error (1002).
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.logger.debug("WebSocket error", metadata: ["connection": "\(connection)", "error": "\(error)"])
        guard !closing else { return }
        closing = true
        let tooLarge: Bool
        switch error as? NIOWebSocketFrameAggregator.Error {
        case .accumulatedFrameSizeIsTooLarge, .tooManyFragments: tooLarge = true
        default: tooLarge = false
        }
        ConnectionTable.closeGently(context.channel, code: tooLarge ? .messageTooLarge : .protocolError)
    }
}
