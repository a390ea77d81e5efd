import Logging
import NIOCore
import NIOEmbedded
import PeerProtocol

/// Runs raw client bytes through the broker's real connection pipeline, in memory. It exists so
/// the libFuzzer target `fuzz-http` (Sources/Fuzz) can reach the internal handlers a client
/// talks to — the WebSocket handshake reader, NIO's HTTP pipeline and ``HTTPRouteHandler``,
/// NIO's frame decoder and ``PeerSocketHandler`` and the engine behind them — through one
/// public door, with no socket and no state kept from one input to the next.
public enum BrokerPipelineFuzzing {
    /// The peer address every fuzzed connection comes from.
    static let address = "192.0.2.7:5000"

    /// One connection's life: a fresh event loop, broker state and channel set up as
    /// `BrokerServer.adopt` sets them up (beside a registered peer `bob` to relay to), the input
    /// after its first byte delivered in one to three reads, time advanced between reads and at
    /// the end so that the handshake deadline and the engine's ticks fire, everything the broker
    /// wrote read back, then the channels closed and the loop shut down. The first byte: bits
    /// 0–1, how many reads; bits 2–5, where the cuts fall; bit 6, a gap past the handshake
    /// deadline after the second read; bit 7, `proxied` on.
    public static func run(_ data: UnsafeRawBufferPointer) {
        guard let control = data.first else { return }
        let input = UnsafeRawBufferPointer(rebasing: data.dropFirst())
        let loop = EmbeddedEventLoop()
        defer { try? loop.syncShutdownGracefully() }
        let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
        let configuration = BrokerConfiguration(
            protocolSettings: ProtocolSettings(
                keys: ["peerjs", "room"], concurrentLimit: 8, allowDiscovery: true, maxQueuedPerDestination: 4,
                maxQueuedBytes: 4096),
            path: "/", proxied: control & 0x80 != 0, maxMessageBytes: 2048, handshakeTimeoutMs: 100,
            authTimeoutMs: 0, ipLimit: 4, ipHandshakeLimit: 4, handshakeLimit: 4, maxHeaderBytes: 4096)
        let state = BrokerState(configuration: configuration, tls: nil, loop: loop, logger: logger, clock: EventLoopClock(loop: loop))
        let bound = NIOLoopBound(state, eventLoop: loop)
        let ticker = loop.scheduleRepeatedTask(initialDelay: .milliseconds(40), delay: .milliseconds(40)) { _ in
            bound.value.tick()
        }
        defer { ticker.cancel() }

        // A registered peer `bob` first, so that messages to it are relayed, not queued.
        guard let bob = connect(state, loop) else { return }
        defer { _ = try? bob.finish(acceptAlreadyClosed: true) }
        _ = try? bob.writeInbound(bob.allocator.buffer(string: bobRequest))
        drain(bob)
        guard let channel = connect(state, loop) else { return }

        // Up to three reads; bits 0–1 pick how many, bits 2–5 where the cuts fall.
        let reads = 1 + Int(control & 0x03) % 3
        var cuts = [0]
        for index in 1..<reads {
            let share = (Int(control >> 2) & 0x0F) * 2 + index * 7
            cuts.append(min(input.count, max(cuts[index - 1], input.count * (share % 32) / 32)))
        }
        cuts.append(input.count)
        for index in 0..<reads where channel.isActive {
            let piece = UnsafeRawBufferPointer(rebasing: input[cuts[index]..<cuts[index + 1]])
            _ = try? channel.writeInbound(channel.allocator.buffer(bytes: piece))
            drain(channel)
            drain(bob)
            // Bit 6 makes the second gap long enough for the handshake deadline.
            loop.advanceTime(by: .milliseconds(index == 1 && control & 0x40 != 0 ? 150 : 10))
            drain(channel)
        }
        loop.advanceTime(by: .seconds(1))
        drain(channel)
        drain(bob)
        _ = try? channel.finish(acceptAlreadyClosed: true)
        loop.run()
    }

    static let bobRequest =
        "GET /peerjs?key=peerjs&id=bob&token=t HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

    /// A connected in-memory channel set up as `BrokerServer.adopt`'s channel initializer sets
    /// up a socket it is handed; nil when admission refuses it or the set-up fails.
    private static func connect(_ state: BrokerState, _ loop: EmbeddedEventLoop) -> EmbeddedChannel? {
        let admission = state.admission
        admission.arrived()
        guard let slot = admission.admit(socketAddress: BrokerState.host(of: address)) else { return nil }
        let channel = EmbeddedChannel(loop: loop)
        do {
            try BrokerServer.configure(channel, state: state, address: address, tls: false, slot: slot)
            try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 5000)).wait()
        } catch {
            _ = try? channel.finish(acceptAlreadyClosed: true)
            return nil
        }
        return channel
    }

    /// Reads (and drops) what the broker wrote to the client.
    private static func drain(_ channel: EmbeddedChannel) {
        while let written = try? channel.readOutbound(as: IOData.self) {
            _ = written
        }
    }
}
