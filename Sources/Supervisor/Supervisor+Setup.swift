import Glibc
import IPC
import Logging
import Sandbox

/// What happens once before the loop: TLS files read, listeners bound or adopted, the children's
/// sandbox prepared — every problem reported before anything is started.
extension Supervisor {
    func setUp() throws(SupervisorError) {
        // TLS files first: a bad key or certificate is reported before anything listens.
        if let files = configuration.tls {
            // No core dump, no ptrace by our own user, before the key is decrypted (issue 16).
            do { try SecretBytes.protectProcess() } catch { throw SupervisorError(.tls, "\(error)") }
            tls.offer(try TLSMaterial.load(files, logger: logger))
        }
        var activated = try Systemd.activatedListeners()
        let metricsSockets = activated.filter { $0.name == MetricsEndpoint.socketName }
        activated.removeAll { $0.name == MetricsEndpoint.socketName }
        if !metricsSockets.isEmpty {
            metricsEndpoint = MetricsEndpoint(listeners: metricsSockets.map { Listener.adopt(descriptor: $0.descriptor, name: $0.name) })
        } else if let port = configuration.metricsPort {
            metricsEndpoint = MetricsEndpoint(listeners: try Listener.bind(host: configuration.metricsHost, port: port, name: MetricsEndpoint.socketName))
        }
        if let endpoint = metricsEndpoint {
            if brokerSettings.metricsIntervalMs == 0 { brokerSettings.metricsIntervalMs = MetricsEndpoint.brokerIntervalMs }
            for listener in endpoint.listeners {
                // notice: where the metrics are is worth a line at the default and quieter levels.
                logger.notice("listening on \(listener.address) port \(listener.port) (\(listener.name), plain; GET /metrics)")
            }
        }
        if activated.isEmpty {
            listeners = try bindListeners()
        } else {
            listeners = activated.map { Listener.adopt(descriptor: $0.descriptor, name: $0.name) }
            let names = listeners.map { "\($0.name)=\($0.address):\($0.port)" }.joined(separator: " ")
            logger.info("socket activation: \(names)")
            if tlsMaterial == nil, listeners.contains(where: \.tls) {
                throw SupervisorError(.tls, "systemd passed a socket named `\(Listener.tlsName)` (FileDescriptorName=), which is served with TLS, but no --sslkey/--sslcert were given")
            }
            if tlsMaterial != nil, !listeners.contains(where: \.tls) {
                logger.warning("--sslkey/--sslcert are given but no socket is named `\(Listener.tlsName)`; every listener is plain HTTP (set FileDescriptorName=\(Listener.tlsName) on the TLS socket)")
            }
        }
        for listener in listeners {
            logger.info("listening on \(listener.address) port \(listener.port) (\(listener.name), \(listener.tls ? "TLS" : "plain"))")
        }
        if brokerSettings.proxied, brokerSettings.trustedProxies.isEmpty {
            logger.notice("--proxied without a list believes X-Forwarded-For from every connection: a client that reaches this port directly can name any address (and escape the per-address limits); listen where only the proxy reaches, or name it: --proxied=ADDR")
        }
        try prepareBrokerSandbox()
    }

    /// Binds `--port` (TLS when key and certificate are given without `--https-port`) and,
    /// with `--https-port`, a TLS listener beside it (on `--https-host`, if given).
    private func bindListeners() throws(SupervisorError) -> [Listener] {
        guard let httpsPort = configuration.httpsPort else {
            return try Listener.bind(host: configuration.host, port: configuration.port, tls: configuration.tls != nil, reusePort: configuration.reusePort)
        }
        guard configuration.tls != nil else {
            throw SupervisorError(.tls, "--https-port needs --sslkey and --sslcert")
        }
        let plain = try Listener.bind(host: configuration.host, port: configuration.port, tls: false, reusePort: configuration.reusePort)
        do {
            return plain + (try Listener.bind(host: configuration.httpsHost ?? configuration.host, port: httpsPort, tls: true, reusePort: configuration.reusePort))
        } catch {
            for listener in plain { close(listener.descriptor) }
            throw error
        }
    }

    /// Creates the broker's chroot directory (root-owned, 0555, empty) when it is missing and
    /// this process runs as root (never through a symlink), and checks each role's user exists
    /// when the children will be able to drop to it — a clear error now instead of a broker crash
    /// loop. When the children could drop privileges, a missing or unsuitable directory stops
    /// the start (fail closed), as does uid 0 without the capabilities to leave it.
    private func prepareBrokerSandbox() throws(SupervisorError) {
        do throws(SandboxError) {
            guard PrivilegeDrop.canDrop(capabilities: try PrivilegeDrop.effectiveCapabilities()) else {
                guard getuid() != 0, geteuid() != 0 else {
                    throw SandboxError(.capabilities, "peerjs runs as root without CAP_SETUID and CAP_SYS_CHROOT, so its broker could not change user; start it as root with its capabilities, or as an unprivileged user")
                }
                return
            }
            guard let directory = configuration.chrootDirectory else {
                throw SandboxError(.chroot, "peerjs can drop privileges but has no chroot directory for the broker; pass --chroot")
            }
            if geteuid() == 0, try PrivilegeDrop.createEmptyRoot(directory) {
                logger.info("created the broker's chroot directory \(directory)")
            }
            guard try PrivilegeDrop.checkEmptyRoot(directory) else {
                throw SandboxError(.chroot, PrivilegeDrop.missingRootMessage(directory))
            }
            for role in policy.order {
                if let row = rows[role], let user = row.user { _ = try PrivilegeDrop.lookUp(user: user, role: row.seccomp.role) }
            }
        } catch {
            throw SupervisorError(.sandbox, error.message)
        }
    }
}
