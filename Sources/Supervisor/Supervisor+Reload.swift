import Glibc
import IPC
import Logging

/// SIGHUP: the helper re-reads its policy files; the supervisor re-reads the configuration and
/// the TLS files and hands the broker its new settings and material. A broken file keeps what
/// is running. Listen addresses and the TLS file paths change only on restart.
extension Supervisor {
    static let setupSendDeadlineMs: Int64 = 2000

    func reloadAuth() {
        guard let channel = children[.auth]?.channel else { return }
        do {
            try channel.send(AuthReloadRequest())
            logger.notice("SIGHUP: the auth helper re-reads its policy files")
        } catch {
            logger.error("could not ask the auth helper to reload (\(error))")
        }
    }

    func reloadConfiguration() {
        if let files = configuration.tls { reloadTLS(files) }
        guard let reload = configuration.reload else { return }
        let reloaded: SupervisorConfiguration.Reloaded
        do {
            reloaded = try reload()
        } catch {
            logger.error("reload failed, keeping the running configuration: \(error)")
            return
        }
        // The auth policy's settings are fixed for the run: the broker asks a helper or it does
        // not, from its start. A change is refused whole, never half applied (fail closed).
        if Self.policy(of: reloaded.auth) != Self.policy(of: configuration.auth) {
            logger.error("reload refused, keeping the running configuration: the auth settings changed (auth_users, auth_program, auth_jwt_*, auth_timeout or auth_program_user); restart peerjs to apply them")
            return
        }
        // Clustering is fixed for the run too: a broker that claims ids in the directory cannot
        // stop (nor start) doing so while it holds peers.
        if reloaded.broker.clustered != brokerSettings.clustered {
            logger.error("reload refused, keeping the running configuration: `cluster` was \(brokerSettings.clustered ? "removed" : "added"); restart peerjs to apply it")
            return
        }
        if reloaded.startOnlyOptions != configuration.startOnlyOptions {
            logger.warning("cluster, cluster_password_file, cluster_instance, cluster_expiry, cluster_user, reuse_port, metrics_port and metrics_host take effect at the next start of peerjs, not on SIGHUP")
        }
        var settings = reloaded.broker
        // How each child runs (user, chroot, log level, sandbox_debug) was checked at start and
        // stays: a reload changes what the broker serves, never a sandbox.
        if settings.process != brokerSettings.process || reloaded.auth?.process != configuration.auth?.process {
            logger.warning("user, chroot, auth_user, log_level and sandbox_debug take effect at the next start of peerjs, not on SIGHUP")
        }
        settings.process = brokerSettings.process
        settings.metricsIntervalMs = brokerSettings.metricsIntervalMs  // the metrics port is fixed for the run
        brokerSettings = settings
        do {
            try children[.broker]?.channel?.send(BrokerReload(settings))
            logger.notice("configuration reloaded")
        } catch {
            logger.error("could not hand the new configuration to the broker (\(error)); it gets it when it restarts")
        }
    }

    /// Re-reads key and certificate; on success the broker uses them for new handshakes, while
    /// established connections keep theirs (a certificate renewal drops no one).
    private func reloadTLS(_ files: TLSFiles) {
        let material: TLSMaterial
        do {
            material = try TLSMaterial.load(files, logger: logger)
        } catch {
            logger.error("TLS reload failed, keeping the running certificate and key: \(error)")
            return
        }
        tls.offer(material)
        guard let channel = children[.broker]?.channel else { return }  // the next broker is sent it
        do {
            try sendTLSMaterial(over: channel)
            logger.info("TLS generation \(tls.currentGeneration) sent to the broker; the one in force changes when the broker takes it")
        } catch {
            tls.sendFailed(error, logger: logger)
        }
    }

    /// Sends the current TLS material as one generation of `tlsChunk` frames, waiting (bounded)
    /// for room in the channel; the encoded key chunks are wiped once sent. The broker answers
    /// with a `tlsAck` (see ``TLSHandoff``).
    func sendTLSMaterial(over channel: HandoffChannel) throws(IPCError) {
        guard let material = tlsMaterial else { return }
        var chunks: [TLSChunk]
        do {
            chunks = try material.chunks(generation: tls.currentGeneration)
        } catch {
            throw IPCError(.invalidArgument, error.description)
        }
        defer { for index in chunks.indices { TLSChunk.wipe(&chunks[index].data) } }
        let deadline = monotonicMilliseconds() + Self.setupSendDeadlineMs
        for chunk in chunks {
            try Self.send(chunk, over: channel, until: deadline)
        }
        tls.sent(now: monotonicMilliseconds())
        children[.broker]?.gate.asked(.tlsChunk)  // one generation, one tlsAck
    }

    /// The auth settings without how the helper runs (its ``ChildSettings``): what a reload
    /// must leave as it is.
    private static func policy(of settings: AuthHelperSettings?) -> AuthHelperSettings? {
        settings.map { var policy = $0; policy.process = ChildSettings(logLevel: "", user: ""); return policy }
    }

    /// Sends `message` on a non-blocking `channel`, waiting for room until `deadline` (ms, the
    /// monotonic clock): for the setup frames a child must get, which may queue behind a long
    /// certificate chain.
    static func send<M: IPCMessage>(_ message: M, over channel: HandoffChannel, until deadline: Int64) throws(IPCError) {
        while true {
            do {
                try channel.send(message)
                return
            } catch where error.code == .wouldBlock {
                let left = deadline - monotonicMilliseconds()
                guard left > 0 else { throw error }
                var entry = pollfd(fd: channel.rawFD, events: Int16(POLLOUT), revents: 0)
                _ = poll(&entry, 1, Int32(left))
            }
        }
    }
}
