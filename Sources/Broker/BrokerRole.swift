import Glibc
public import IPC
public import Logging
import PeerProtocol

extension BrokerConfiguration {
    /// The configuration the supervisor sent in `hello` or `reload`.
    public init(_ settings: BrokerSettings) {
        self.init(
            protocolSettings: ProtocolSettings(
                keys: Set([settings.key] + settings.extraKeys),
                expireTimeoutMs: Int64(settings.expireTimeoutMs),
                aliveTimeoutMs: Int64(settings.aliveTimeoutMs),
                concurrentLimit: Int(settings.concurrentLimit),
                allowDiscovery: settings.allowDiscovery,
                cleanupIntervalMs: Int64(settings.cleanupIntervalMs),
                maxQueuedBytesPerDestination: Int(settings.outputLimit / 2),
                takeoverTimeoutMs: Int64(settings.takeoverTimeoutMs)),
            path: settings.path,
            corsOrigins: settings.corsOrigins,
            proxied: settings.proxied,
            maxMessageBytes: Int(settings.maxMessageBytes),
            handshakeTimeoutMs: Int64(settings.handshakeTimeoutMs),
            authTimeoutMs: Int64(settings.authTimeoutMs),
            authEvents: settings.authEvents,
            ipLimit: Int(settings.ipLimit),
            ipHandshakeLimit: Int(settings.ipHandshakeLimit),
            handshakeLimit: Int(settings.handshakeLimit),
            outputLimit: Int(settings.outputLimit),
            maxHeaderBytes: Int(settings.maxHeaderBytes),
            trustedProxies: settings.trustedProxies.map { ForwardedFor.canonical($0) ?? $0 },
            clustered: settings.clustered,
            metricsIntervalMs: Int64(settings.metricsIntervalMs))
    }
}

/// The broker process: takes the setup frames (TLS material in `tlsChunk` frames, if any, then
/// `hello`, which ends the setup), starts serving, then takes connections, reloads, new TLS
/// material and the drain order from the supervisor's channel until it ends. A bad frame from
/// the supervisor ends the broker (the supervisor starts a fresh one).
///
/// Everything TLS needs from the system is done before `ready` (BoringSSL's context is built
/// from bytes, nothing is opened, and its lazy RNG set-up is forced early); what is left at
/// run time is memory (malloc: mmap/mprotect/munmap/madvise) and getrandom for handshakes,
/// and, on SIGHUP, building a new context from bytes again (memory only, the key's pages
/// mlock'd). Every whole generation of TLS material is answered with a `tlsAck` (taken or
/// refused), so the supervisor knows which certificate is in force.
public enum BrokerRole {
    /// Runs the broker on the supervisor channel at `descriptor`; returns the exit status.
    /// - Parameters:
    ///   - confine: called with the supervisor's settings once the event loop threads run and
    ///     before `ready` is sent or any connection is received: the executable enters the
    ///     sandbox here (this module does not know how). Throwing ends the broker with status 3.
    public static func run(
        channelDescriptor: Int32, logger: Logger, confine: (BrokerSettings) throws -> Void
    ) -> Int32 {
        let channel = HandoffChannel(adopting: channelDescriptor, roles: ChannelRoles(local: .broker, remote: .supervisor))
        let server: BrokerServer
        var assembler = TLSChunkAssembler()
        var gate = FrameGate(local: .broker, remote: .supervisor)  // refuses frames out of phase
        var keyProtected = false
        do {
            var tls: (any TLSProvider)?
            var hello: BrokerSettings?
            var authDescriptor: Int32?
            var clusterDescriptor: Int32?
            defer {
                if let authDescriptor { close(authDescriptor) }
                if let clusterDescriptor { close(clusterDescriptor) }
            }
            while hello == nil {
                guard var frame = try channel.receive() else {
                    logger.notice("supervisor went away before hello")
                    return 0
                }
                try gate.accept(frame)
                switch frame.type {
                case .hello:
                    hello = try frame.decode(BrokerSettings.self)
                case .authChannel:
                    if let authDescriptor { close(authDescriptor) }
                    guard let descriptor = frame.takeFD() else { continue }
                    authDescriptor = descriptor.release()
                case .clusterChannel:
                    if let clusterDescriptor { close(clusterDescriptor) }
                    guard let descriptor = frame.takeFD() else { continue }
                    clusterDescriptor = descriptor.release()
                case .tlsChunk:
                    if !keyProtected {
                        // No core dump and no ptrace by our own user while the key is here.
                        try SecretBytes.protectProcess()
                        keyProtected = true
                    }
                    defer { frame.wipePayload() }  // also when the chunk is refused
                    let material = try assembler.add(frame.decode(TLSChunk.self))
                    if let material {
                        do {
                            tls = try NIOSSLTLSProvider(certificateChainPEM: material.certificateChainPEM, privateKeyDER: material.privateKeyDER)
                        } catch {
                            logger.error("the TLS material from the supervisor is unusable: \(error)")
                            try? channel.send(TLSAck.refused(generation: material.generation, reason: "\(error)"))
                            return 2
                        }
                        try channel.send(TLSAck(generation: material.generation, accepted: true))
                    }
                default:
                    logger.error("expected hello from the supervisor, got \(frame.type)")
                    return 2
                }
            }
            guard let settings = hello, !assembler.isIncomplete else {
                logger.error("the supervisor sent hello in the middle of the TLS material")
                return 2
            }
            if tls != nil { try NIOSSLTLSProvider.prepareRuntime() }
            server = try BrokerServer(configuration: BrokerConfiguration(settings), tls: tls, logger: logger)
            if let descriptor = authDescriptor {
                authDescriptor = nil
                server.attachAuth(descriptor: descriptor)
            }
            if let descriptor = clusterDescriptor {
                clusterDescriptor = nil
                server.attachCluster(descriptor: descriptor)
            }
            do {
                try confine(settings)
            } catch {
                logger.critical("cannot enter the sandbox: \(error)")
                return 3
            }
            try channel.send(BrokerReady())
            server.startAdmission(channel: channel)
            server.startMetrics(channel: channel)
        } catch {
            logger.error("broker start-up failed: \(error)")
            return 2
        }
        var lostDescriptors = 0
        while true {
            do {
                guard var frame = try channel.receive() else {
                    logger.notice("supervisor channel closed; exiting")
                    return 0
                }
                try gate.accept(frame)
                switch frame.type {
                case .connection:
                    let handoff = try frame.decode(ConnectionHandoff.self)
                    guard let descriptor = frame.takeFD() else {
                        if frame.descriptorLost {
                            lostDescriptors += 1
                            if lostDescriptors == 1 || lostDescriptors % 1000 == 0 {
                                logger.warning("a connection from \(handoff.peer) arrived without its descriptor (the descriptor table is full); it is lost (\(lostDescriptors) so far)")
                            }
                            server.lostConnection()
                        }
                        continue
                    }
                    server.adopt(descriptor: descriptor.release(), address: handoff.peer.description, tls: handoff.tls, acceptedAtNs: handoff.acceptedAtNs)
                case .authChannel:
                    guard let descriptor = frame.takeFD() else {
                        if frame.descriptorLost {
                            logger.error("the auth helper's channel arrived without its descriptor (the descriptor table is full); registrations are denied until the helper restarts")
                        }
                        continue
                    }
                    server.attachAuth(descriptor: descriptor.release())
                case .clusterChannel:
                    guard let descriptor = frame.takeFD() else {
                        if frame.descriptorLost {
                            logger.error("the cluster role's channel arrived without its descriptor (the descriptor table is full); new ids are refused until the role restarts")
                        }
                        continue
                    }
                    server.attachCluster(descriptor: descriptor.release())
                case .reload:
                    server.reload(BrokerConfiguration(try frame.decode(BrokerReload.self).settings))
                    logger.notice("configuration reloaded")
                case .tlsChunk:
                    defer { frame.wipePayload() }  // also when the chunk is refused
                    let material = try assembler.add(frame.decode(TLSChunk.self))
                    if let material {
                        // The answer tells the supervisor which certificate is really in force.
                        let ack: TLSAck
                        do {
                            try server.updateTLS(try NIOSSLTLSProvider(certificateChainPEM: material.certificateChainPEM, privateKeyDER: material.privateKeyDER))
                            logger.notice("TLS certificate and key reloaded; new handshakes use them")
                            ack = TLSAck(generation: material.generation, accepted: true)
                        } catch {
                            logger.error("the new TLS material is unusable, keeping the old: \(error)")
                            ack = TLSAck.refused(generation: material.generation, reason: "\(error)")
                        }
                        try channel.send(ack)
                    }
                case .drain:
                    let request = try frame.decode(DrainRequest.self)
                    server.drain(deadlineMs: Int64(request.deadlineMs))
                    logger.notice("drained; exiting")
                    return 0
                default:
                    logger.error("unexpected \(frame.type) frame from the supervisor; exiting")
                    return 2
                }
            } catch {
                logger.error("bad frame from the supervisor (\(error)); exiting")
                return 2
            }
        }
    }
}
