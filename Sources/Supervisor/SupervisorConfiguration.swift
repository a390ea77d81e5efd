public import IPC

/// What the supervisor needs: where to listen, what to tell the broker, how to start it.
public struct SupervisorConfiguration: Sendable {
    /// Listen addresses; nil listens on every address (IPv6 and IPv4).
    public var host: String?
    public var port: UInt16
    /// The broker's settings, sent in its `hello` frame.
    public var broker: BrokerSettings
    /// The binary to start for the broker role (this same binary).
    public var executable: String
    /// argv[0] of every child; a child's whole command line is `argv0 --role NAME`, everything
    /// else it is told travels in its `hello`.
    public var argv0: String
    /// How long a draining broker may take to close its peers after SIGTERM.
    public var drainDeadlineMs: UInt32
    /// Re-reads the configuration on SIGHUP and returns the broker's new settings; nil when
    /// there is nothing to re-read (settings came from the command line only).
    public var reload: (@Sendable () throws -> Reloaded)?
    /// The TLS key and certificate (read at start and on every SIGHUP); nil serves no TLS.
    public var tls: TLSFiles?
    /// With `tls`: a TLS listener on this port beside the plain one on `port`. Without it, the
    /// `port` listener itself is TLS (as in peerjs-server). Ignored under socket activation,
    /// where a socket named `https` is TLS and any other is plain.
    public var httpsPort: UInt16?
    /// The address of the `httpsPort` listener; nil means the same as `host`.
    public var httpsHost: String?

    /// The auth helper's settings, sent in its `authHello`; nil: no helper, everyone is allowed.
    public var auth: AuthHelperSettings?

    /// The cluster role's settings, sent in its `clusterHello`; nil: one instance on its own.
    public var cluster: ClusterSettings?

    /// SO_REUSEPORT on the listeners this process binds itself, so that several instances
    /// share one port (the kernel spreads connections between them).
    public var reusePort = false

    /// `--metrics-port`: a Prometheus endpoint on this port (on ``metricsHost``); nil: none,
    /// unless systemd passes a socket named `metrics`.
    public var metricsPort: UInt16?
    /// `--metrics-host`: where the metrics port listens (default loopback only).
    public var metricsHost = "127.0.0.1"

    /// The options read at start only, as given (`cluster`, its password file, instance, expiry,
    /// user, `reuse_port`, `metrics_port`, `metrics_host`), to tell on SIGHUP that a change waits
    /// for a restart.
    public var startOnlyOptions: [String] = []

    /// The empty directory the broker chroots into; created root-owned 0555 when missing and
    /// this process runs as root. nil: none.
    public var chrootDirectory: String? {
        broker.process.chrootDirectory.isEmpty ? nil : broker.process.chrootDirectory
    }

    public init(host: String?, port: UInt16, broker: BrokerSettings, executable: String, argv0: String = "peerjs",
                drainDeadlineMs: UInt32 = 3000, reload: (@Sendable () throws -> Reloaded)? = nil,
                tls: TLSFiles? = nil, httpsPort: UInt16? = nil, httpsHost: String? = nil,
                auth: AuthHelperSettings? = nil) {
        self.host = host
        self.port = port
        self.broker = broker
        self.executable = executable
        self.argv0 = argv0
        self.drainDeadlineMs = drainDeadlineMs
        self.reload = reload
        self.tls = tls
        self.httpsPort = httpsPort
        self.httpsHost = httpsHost
        self.auth = auth
    }
}

extension SupervisorConfiguration {
    /// What a SIGHUP re-reads: the broker's settings, and the auth helper's, which must not
    /// change (a running broker cannot start or stop asking a helper; see `reloadConfiguration`).
    public struct Reloaded: Sendable {
        public var broker: BrokerSettings
        public var auth: AuthHelperSettings?
        /// See ``SupervisorConfiguration/startOnlyOptions``.
        public var startOnlyOptions: [String]

        public init(broker: BrokerSettings, auth: AuthHelperSettings?, startOnlyOptions: [String] = []) {
            self.broker = broker
            self.auth = auth
            self.startOnlyOptions = startOnlyOptions
        }
    }
}
