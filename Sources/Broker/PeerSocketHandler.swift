import Logging
import NIOCore
import NIOWebSocket
import PeerProtocol

/// One registered (or registering) PeerJS WebSocket: checks each frame, joins fragments, hands
/// text and binary messages to the engine, answers pings, counts pongs as signs of life, and
/// tells the engine when it closes. It sits right after NIO's frame decoder; the frames the
/// broker sends are built by ``ServerFrame`` and go straight to the socket (or TLS).
final class PeerSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    /// Most fragments one message may arrive in.
    static let maxFragments = 256

    private let state: BrokerState
    private let connection: ConnectionID
    private let maxMessageBytes: Int
    private var closing = false
    /// A fragmented message being joined: its first frame's data (unmasked) and frame count.
    private var fragments: (data: ByteBuffer, count: Int)?
    /// A fragmented message must be complete within `--handshake_timeout` of its first frame:
    /// pings keep a connection alive, but not a half message held in the broker's memory.
    private var fragmentDeadline: Scheduled<Void>?
    /// The pongs of this read burst, in one buffer: a client's burst of pings costs one write
    /// (and one allocation), not one per ping. Written at the end of the burst, or before
    /// anything else this connection may be sent, so frames keep their order.
    private var pongs: ByteBuffer?
    /// Something was written to this channel in this burst and waits for its flush.
    private var unflushed = false
    /// The client's address, for the log line when it stops reading.
    private var address = "?"

    init(state: BrokerState, connection: ConnectionID, maxMessageBytes: Int) {
        self.state = state
        self.connection = connection
        self.maxMessageBytes = maxMessageBytes
    }

    func handlerAdded(context: ChannelHandlerContext) {
        address = state.connections.address(of: connection)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let frame = unwrapInboundIn(data)
        // What NIO's decoder leaves to the application (RFC 6455 §5.1–5.2, PROTOCOL.md E4):
        // client frames are masked, carry no RSV bits (no extension is negotiated) and use a
        // defined opcode.
        guard let key = frame.maskKey, !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            return fail(context, code: .protocolError)
        }
        var payload = frame.data
        payload.unmaskWebSocketPayload(key)
        switch frame.opcode {
        case .text, .binary:
            // E3: a binary frame holding a JSON message is handled like text.
            guard fragments == nil else { return fail(context, code: .protocolError) }
            guard frame.fin else {
                fragments = (payload, 1)
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                fragmentDeadline = context.eventLoop.scheduleTask(in: .milliseconds(state.configuration.handshakeTimeoutMs)) {
                    let (handler, context) = bound.value
                    guard handler.fragments != nil, !handler.closing else { return }
                    handler.state.logger.notice("closing \(handler.address): a fragmented message was not complete within --handshake_timeout")
                    handler.fail(context, code: .policyViolation)
                }
                return
            }
            deliver(payload, context: context)
        case .continuation:
            guard var joined = fragments else { return fail(context, code: .protocolError) }
            fragments = nil
            guard joined.count < Self.maxFragments, joined.data.readableBytes + payload.readableBytes <= maxMessageBytes else {
                return fail(context, code: .messageTooLarge)
            }
            joined.data.writeBuffer(&payload)
            joined.count += 1
            guard frame.fin else {
                fragments = joined
                return
            }
            fragmentDeadline?.cancel()
            fragmentDeadline = nil
            deliver(joined.data, context: context)
        case .ping:
            state.engine.touch(connection)
            // A client that pings but does not read gets no more pongs once --output_limit bytes
            // wait for it; it is being closed (channelWritabilityChanged).
            guard context.channel.isWritable else { return }
            if pongs == nil { pongs = context.channel.allocator.buffer(capacity: 2 + payload.readableBytes) }
            ServerFrame.append(.pong, payload: payload, to: &pongs!)
            // Written in chunks, so that writability (and --output_limit) applies within a burst too.
            if pongs!.readableBytes >= Self.pongChunk { writePongs(context) }
        case .pong:
            state.engine.touch(connection)
        case .connectionClose:
            closing = true
            writePongs(context)
            // Echo the client's close code, then close the TCP connection.
            let code = payload.readSlice(length: 2) ?? context.channel.allocator.buffer(capacity: 0)
            let reply = ServerFrame.make(.connectionClose, payload: code, allocator: context.channel.allocator)
            ConnectionTable.close(context.channel, after: reply)
        default:
            fail(context, code: .protocolError)
        }
    }

    /// The engine may write to this connection, or close it: pongs go first.
    private func deliver(_ message: ByteBuffer, context: ChannelHandlerContext) {
        writePongs(context)
        message.withUnsafeReadableBytes { state.engine.receive($0, from: connection) }
    }

    private func fail(_ context: ChannelHandlerContext, code: WebSocketErrorCode) {
        closing = true
        fragments = nil
        fragmentDeadline?.cancel()
        fragmentDeadline = nil
        pongs = nil
        ConnectionTable.closeGently(context.channel, code: code)
    }

    /// The largest pong buffer a burst collects before writing it.
    static let pongChunk = 16 * 1024

    private func writePongs(_ context: ChannelHandlerContext) {
        guard let buffer = pongs else { return }
        pongs = nil
        context.write(wrapOutboundOut(buffer), promise: nil)
        unflushed = true
    }

    /// The end of a read burst: send what the burst relayed, one flush per destination.
    func channelReadComplete(context: ChannelHandlerContext) {
        state.connections.flush()
        // Not after a close frame: the client's or one the engine sent (the peer was dropped).
        if closing || !state.connections.contains(connection) { pongs = nil }
        writePongs(context)
        if unflushed {
            unflushed = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    /// Past `--output_limit` bytes waiting for this client: it is closed (``OutputLimit``).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        OutputLimit.closeIfStuck(context.channel, address: address, state: state)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        fragmentDeadline?.cancel()
        fragmentDeadline = nil
        state.connections.remove(connection)
        state.engine.connectionClosed(connection)
        state.connections.flush()
        context.fireChannelInactive()
    }

    /// Errors from NIO's frame decoder: a frame over the size limit is 1009, a malformed
    /// control frame 1002.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.logger.debug("WebSocket error", metadata: ["connection": "\(connection)", "error": "\(error)"])
        guard !closing else { return }
        fail(context, code: (error as? NIOWebSocketError) == .invalidFrameLength ? .messageTooLarge : .protocolError)
    }
}

/// Frames the broker sends (RFC 6455 §5.2: FIN set, unmasked), built in one buffer so each
/// leaves in one write, with no encoder handler in the pipeline.
enum ServerFrame {
    /// The largest server frame header: 2 bytes and a 64-bit length.
    static let maxHeaderBytes = 10

    /// A buffer holding the header for a `count`-byte payload of `opcode`, with room for the payload.
    static func header(_ opcode: WebSocketOpcode, count: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: maxHeaderBytes + count)
        writeHeader(opcode, count: count, to: &buffer)
        return buffer
    }

    private static func writeHeader(_ opcode: WebSocketOpcode, count: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(0x80 | UInt8(webSocketOpcode: opcode))
        switch count {
        case 0...125:
            buffer.writeInteger(UInt8(count))
        case 126...0xFFFF:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(count))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(count))
        }
    }

    /// Appends a frame of `opcode` carrying `payload` to `buffer`.
    static func append(_ opcode: WebSocketOpcode, payload: ByteBuffer, to buffer: inout ByteBuffer) {
        writeHeader(opcode, count: payload.readableBytes, to: &buffer)
        var payload = payload
        buffer.writeBuffer(&payload)
    }

    static func make(_ opcode: WebSocketOpcode, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = header(opcode, count: payload.readableBytes, allocator: allocator)
        var payload = payload
        buffer.writeBuffer(&payload)
        return buffer
    }

    static func make(_ opcode: WebSocketOpcode, payload: UnsafeRawBufferPointer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = header(opcode, count: payload.count, allocator: allocator)
        buffer.writeBytes(payload)
        return buffer
    }
}
