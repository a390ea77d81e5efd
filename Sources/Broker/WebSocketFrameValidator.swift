import NIOCore
import NIOWebSocket

/// Enforces what NIO's frame decoder leaves to the application (RFC 6455 §5.1–5.2): client
/// frames must be masked, carry no RSV bits (no extension is negotiated) and use a defined
/// opcode. A violation closes that connection with 1002 (PROTOCOL.md E4); nothing else is hurt.
final class WebSocketFrameValidator: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let frame = unwrapInboundIn(data)
        let knownOpcode: Bool
        switch frame.opcode {
        case .continuation, .text, .binary, .connectionClose, .ping, .pong: knownOpcode = true
        default: knownOpcode = false
        }
        guard knownOpcode, !frame.rsv1, !frame.rsv2, !frame.rsv3, frame.maskKey != nil else {
            failed = true
            ConnectionTable.closeGently(context.channel, code: .protocolError)
            return
        }
        context.fireChannelRead(data)
    }
}
