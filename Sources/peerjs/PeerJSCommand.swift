import ArgumentParser
import AuthHelper
import AuthJWT
import Broker
import Glibc
import IPC
import Logging
import PeerJSConfiguration
import Sandbox
import Supervisor

/// The `peerjs` command line: the flags of peerjs-server (same names and defaults, each also
/// in kebab-case) plus this server's own limits. It only parses and picks a role.
struct PeerJSCommand: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "peerjs",
        abstract: "A PeerJS-compatible WebRTC signalling server with privilege separation.",
        discussion: """
            Unmodified PeerJS clients register an id and exchange OFFER, ANSWER and CANDIDATE \
            messages through it. A privileged supervisor accepts connections and hands them to an \
            unprivileged broker process that speaks HTTP and WebSocket. See peerjs(8).
            """,
        version: version
    )

    @Option(name: [.short, .customLong("port")], help: "TCP port to listen on (0 lets the system choose).")
    var port: Int = 9000

    @Option(name: [.customShort("H"), .customLong("host")], help: "Address to listen on (default: every address, IPv6 and IPv4).")
    var host: String?

    @Option(name: [.short, .customLong("key")], help: "The API key clients must present.")
    var key: String = "peerjs"

    @Option(name: .customLong("path"), help: "The path the server is mounted at.")
    var path: String = "/"

    @Option(name: [.customShort("t"), .customLong("expire_timeout"), .customLong("expire-timeout")],
            help: ArgumentHelp("Milliseconds before messages for an offline peer expire.", valueName: "ms"))
    var expireTimeout: Int = 5000

    @Option(name: [.customLong("alive_timeout"), .customLong("alive-timeout")],
            help: ArgumentHelp("Milliseconds of silence (no message, no pong) before a peer is dropped.", valueName: "ms"))
    var aliveTimeout: Int = 60000

    @Option(name: [.customLong("takeover-timeout"), .customLong("takeover_timeout")],
            help: ArgumentHelp("Milliseconds the socket holding an id has to answer a ping when another token asks for that id; silent, it is closed and the id changes hands. 0: ID-TAKEN at once.", valueName: "ms"))
    var takeoverTimeout: Int = Int(BrokerSettings.defaultTakeoverTimeoutMs)

    @Option(name: [.short, .customLong("concurrent_limit"), .customLong("concurrent-limit")],
            help: "The most peers registered at once.")
    var concurrentLimit: Int = 5000

    @Flag(name: [.customLong("allow_discovery"), .customLong("allow-discovery")],
          help: "Let clients list connected peers (GET /<key>/peers).")
    var allowDiscovery = false

    @Flag(name: .customLong("proxied"),
          help: "Behind a reverse proxy: the client address is the rightmost X-Forwarded-For entry. --proxied=ADDR,... believes only these proxies.")
    var proxied = false

    /// The addresses of `--proxied=ADDR,…` (the argument rewrite in ``normalise(_:)`` moves
    /// them here, since a flag cannot take an optional value).
    @Option(name: .customLong("proxied-by"), help: .private)
    var proxiedBy: String?

    @Option(name: [.customLong("ip_limit"), .customLong("ip-limit")],
            help: ArgumentHelp("The most connections and peers from one client address (0: no limit).", valueName: "n"))
    var ipLimit: Int = Int(BrokerSettings.defaultIPLimit)

    @Option(name: [.customLong("ip_handshake_limit"), .customLong("ip-handshake-limit")],
            help: ArgumentHelp("The most unfinished handshakes from one client address (0: no limit).", valueName: "n"))
    var ipHandshakeLimit: Int = Int(BrokerSettings.defaultIPHandshakeLimit)

    @Option(name: [.customLong("handshake_limit"), .customLong("handshake-limit")],
            help: ArgumentHelp("The most connections still in their handshake; past it the oldest is closed.", valueName: "n"))
    var handshakeLimit: Int = Int(BrokerSettings.defaultHandshakeLimit)

    @Option(name: [.customLong("output_limit"), .customLong("output-limit")],
            help: ArgumentHelp("The most bytes buffered for one client that does not read; past it the connection is closed.", valueName: "bytes"))
    var outputLimit: Int = Int(BrokerSettings.defaultOutputLimit)

    @Option(name: [.customLong("max_header_size"), .customLong("max-header-size")],
            help: ArgumentHelp("The largest HTTP request head (request line and headers); a larger one gets 431.", valueName: "bytes"))
    var maxHeaderSize: Int = Int(BrokerSettings.defaultMaxHeaderBytes)

    @Option(name: .customLong("cors"), help: ArgumentHelp("An allowed CORS origin (repeatable; default: echo any origin).", valueName: "origin"))
    var cors: [String] = []

    @Option(name: [.customLong("cleanup_out_msgs"), .customLong("cleanup-out-msgs")],
            help: ArgumentHelp("Milliseconds between sweeps of expired offline messages.", valueName: "ms"))
    var cleanupOutMsgs: Int = 1000

    @Option(name: [.customLong("max_message_size"), .customLong("max-message-size")],
            help: ArgumentHelp("Largest WebSocket message in bytes; a larger one closes the connection.", valueName: "bytes"))
    var maxMessageSize: Int = 65536

    @Option(name: [.customLong("handshake_timeout"), .customLong("handshake-timeout")],
            help: ArgumentHelp("Milliseconds a connection may take to finish its TLS handshake or send a complete HTTP request.", valueName: "ms"))
    var handshakeTimeout: Int = 10000

    @Option(name: .customLong("sslkey"), help: ArgumentHelp("PEM private key (PKCS#8, PKCS#1 or SEC1) for HTTPS and WSS; needs --sslcert. Re-read on SIGHUP.", valueName: "file"))
    var sslkey: String?

    @Option(name: .customLong("sslcert"), help: ArgumentHelp("PEM certificate chain, server certificate first; needs --sslkey. Re-read on SIGHUP.", valueName: "file"))
    var sslcert: String?

    @Option(name: [.customLong("sslkey-passphrase-file"), .customLong("sslkey_passphrase_file")],
            help: ArgumentHelp("File whose first line is the passphrase of an encrypted --sslkey.", valueName: "file"))
    var sslkeyPassphraseFile: String?

    @Option(name: [.customLong("https-port"), .customLong("https_port")],
            help: ArgumentHelp("Serve TLS on this port and keep --port plain (default: with --sslkey/--sslcert, --port itself is TLS).", valueName: "port"))
    var httpsPort: Int?

    @Option(name: [.customLong("https-host"), .customLong("https_host")],
            help: ArgumentHelp("Address of the --https-port listener (default: --host), e.g. --host 127.0.0.1 for a local proxy and a public TLS port.", valueName: "address"))
    var httpsHost: String?

    @Option(name: [.customLong("log-level"), .customLong("log_level")],
            help: "Least severe log level written: debug, info, notice, warning or error.")
    var logLevel: String = "info"

    @Option(name: .customLong("config"), help: ArgumentHelp("Read settings from a `key = value` file first; flags given here override it. SIGHUP re-reads it.", valueName: "file"))
    var config: String?

    @Option(name: .customLong("user"),
            help: "The unprivileged user the broker runs as when peerjs starts as root (or with CAP_SETUID and CAP_SYS_CHROOT).")
    var user: String = SandboxPolicy.defaultUser

    @Option(name: .customLong("chroot"),
            help: ArgumentHelp("The empty, root-owned directory the broker is locked into (created, mode 0555, when missing and peerjs runs as root).", valueName: "dir"))
    var chroot: String = SandboxPolicy.defaultChrootDirectory

    @Option(name: .customLong("keys"),
            help: ArgumentHelp("Comma-separated API keys served instead of --key; each key is a room of its own (its own ids, its own /<key>/peers).", valueName: "key,key"))
    var keys: String?

    @Option(name: [.customLong("auth-users"), .customLong("auth_users")],
            help: ArgumentHelp("Users file for the auth helper: lines of `id token [key ...]`; re-read on SIGHUP.", valueName: "file"))
    var authUsers: String?

    @Option(name: [.customLong("auth-program"), .customLong("auth_program")],
            help: ArgumentHelp("Policy program the auth helper runs and asks in JSON lines (see README); restarted when it dies or hangs.", valueName: "path"))
    var authProgram: String?

    @Option(name: [.customLong("auth-jwt-key"), .customLong("auth_jwt_key")],
            help: ArgumentHelp("The token is a JWT (sub = peer id, optional keys claim, exp/nbf enforced) signed with this HS256 secret or ES256/RS256 PEM public key; re-read on SIGHUP.", valueName: "file"))
    var authJWTKey: String?

    @Option(name: [.customLong("auth-jwt-audience"), .customLong("auth_jwt_audience")],
            help: ArgumentHelp("With --auth-jwt-key: the token's aud claim (a string or an array) must contain this value.", valueName: "aud"))
    var authJWTAudience: String?

    @Option(name: [.customLong("auth-jwt-issuer"), .customLong("auth_jwt_issuer")],
            help: ArgumentHelp("With --auth-jwt-key: the token's iss claim must be exactly this value.", valueName: "iss"))
    var authJWTIssuer: String?

    @Option(name: [.customLong("auth-timeout"), .customLong("auth_timeout")],
            help: ArgumentHelp("Milliseconds the broker waits for the auth helper; then the client gets `Auth Timeout`.", valueName: "ms"))
    var authTimeout: Int = 1000

    @Option(name: [.customLong("auth-user"), .customLong("auth_user")],
            help: "The unprivileged user the auth helper runs as when peerjs starts as root.")
    var authUser: String = "_peerjs-auth"

    @Option(name: [.customLong("auth-program-user"), .customLong("auth_program_user")],
            help: "The user of its own the policy program runs as when peerjs starts as root (never the helper's or the broker's).")
    var authProgramUser: String = PolicyProgramUser.defaultName

    @Option(name: .customLong("cluster"),
            help: ArgumentHelp("Serve as one with the other instances using this PostgreSQL database: postgres://USER@HOST[:PORT]/DATABASE (no password in it).", valueName: "url"))
    var cluster: String?

    @Option(name: [.customLong("cluster-password-file"), .customLong("cluster_password_file")],
            help: ArgumentHelp("File whose first line is the database password for --cluster (works with LoadCredential=).", valueName: "file"))
    var clusterPasswordFile: String?

    @Option(name: [.customLong("cluster-instance"), .customLong("cluster_instance")],
            help: ArgumentHelp("This instance's name in the cluster, 1-40 of A-Z a-z 0-9 _ . - (default: HOSTNAME-XXXXXX, new at each start).", valueName: "name"))
    var clusterInstance: String?

    @Option(name: [.customLong("cluster-expiry"), .customLong("cluster_expiry")],
            help: ArgumentHelp("Seconds after which the ids of an instance that stopped refreshing them are free again.", valueName: "s"))
    var clusterExpiry: Int = 30

    @Option(name: [.customLong("cluster-user"), .customLong("cluster_user")],
            help: "The unprivileged user the cluster role runs as when peerjs starts as root.")
    var clusterUser: String = "_peerjs-cluster"

    @Flag(name: [.customLong("reuse-port"), .customLong("reuse_port")],
          help: "Set SO_REUSEPORT on the listeners peerjs binds itself, so several instances share one port.")
    var reusePort = false

    @Option(name: [.customLong("metrics-port"), .customLong("metrics_port")],
            help: ArgumentHelp("Serve Prometheus metrics at GET /metrics on this port (off by default; systemd: a socket named metrics).", valueName: "port"))
    var metricsPort: Int?

    @Option(name: [.customLong("metrics-host"), .customLong("metrics_host")],
            help: ArgumentHelp("The address the metrics port listens on.", valueName: "address"))
    var metricsHost: String = "127.0.0.1"

    @Option(name: .customLong("role"), help: .private)
    var role: String?

    /// Forbidden calls trap and are named on stderr before the process dies of SIGSYS.
    @Flag(name: .customLong("sandbox-debug"), help: .private)
    var sandboxDebug = false

    /// The sandbox-probe role: which role's sandbox to enter, and what to try inside it.
    @Option(name: .customLong("policy"), help: .private)
    var probePolicy: String = "broker"

    @Option(name: .customLong("try"), help: .private)
    var probeTry: String = "baseline"

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, not \(port)") }
        guard !key.isEmpty else { throw ValidationError("--key must not be empty") }
        for (flag, value) in [("--expire_timeout", expireTimeout), ("--alive_timeout", aliveTimeout),
                              ("--cleanup_out_msgs", cleanupOutMsgs), ("--handshake_timeout", handshakeTimeout)] {
            guard (1...86_400_000).contains(value) else {
                throw ValidationError("\(flag) must be between 1 and 86400000 ms, not \(value)")
            }
        }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw ValidationError("--metrics-port must be between 0 and 65535, not \(metricsPort)")
        }
        guard !metricsHost.isEmpty else { throw ValidationError("--metrics-host must not be empty") }
        guard (0...60_000).contains(takeoverTimeout) else {
            throw ValidationError("--takeover-timeout must be between 0 (off) and 60000 ms, not \(takeoverTimeout)")
        }
        guard (1...10_000_000).contains(concurrentLimit) else {
            throw ValidationError("--concurrent_limit must be between 1 and 10000000, not \(concurrentLimit)")
        }
        for (flag, value) in [("--ip_limit", ipLimit), ("--ip_handshake_limit", ipHandshakeLimit)] {
            guard (0...10_000_000).contains(value) else {
                throw ValidationError("\(flag) must be between 0 (no limit) and 10000000, not \(value)")
            }
        }
        guard (1...1_000_000).contains(handshakeLimit) else {
            throw ValidationError("--handshake_limit must be between 1 and 1000000, not \(handshakeLimit)")
        }
        guard (65536...1_073_741_824).contains(outputLimit) else {
            throw ValidationError("--output_limit must be between 65536 and 1073741824 bytes, not \(outputLimit)")
        }
        guard (1024...65536).contains(maxHeaderSize) else {
            throw ValidationError("--max_header_size must be between 1024 and 65536 bytes, not \(maxHeaderSize)")
        }
        if let proxiedBy {
            let list = Self.trustedProxies(proxiedBy)
            guard !list.isEmpty, list.count <= BrokerSettings.maxTrustedProxies else {
                throw ValidationError("--proxied= needs between 1 and \(BrokerSettings.maxTrustedProxies) comma-separated proxy addresses")
            }
            for address in list where !Self.isNumericAddress(address) {
                throw ValidationError("--proxied: `\(address)` is not a numeric IPv4 or IPv6 address")
            }
        }
        guard (256...16_777_216).contains(maxMessageSize) else {
            throw ValidationError("--max_message_size must be between 256 and 16777216 bytes, not \(maxMessageSize)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard cors.count <= 64 else { throw ValidationError("--cors may be given at most 64 times") }
        if let role, Self.childRoles[role] == nil { throw ValidationError("--role: unknown role \(role)") }
        if authJWTKey == nil, authJWTAudience != nil || authJWTIssuer != nil {
            throw ValidationError("--auth-jwt-audience and --auth-jwt-issuer need --auth-jwt-key")
        }
        for (flag, value) in [("--auth-jwt-audience", authJWTAudience), ("--auth-jwt-issuer", authJWTIssuer)] {
            if let value, value.isEmpty || value.utf8.count > 1024 {
                throw ValidationError("\(flag) must be 1 to 1024 bytes")
            }
        }
        guard (1...60_000).contains(authTimeout) else {
            throw ValidationError("--auth-timeout must be between 1 and 60000 ms, not \(authTimeout)")
        }
        guard !authUser.isEmpty else { throw ValidationError("--auth-user must not be empty") }
        guard !clusterUser.isEmpty else { throw ValidationError("--cluster-user must not be empty") }
        guard (3...86_400).contains(clusterExpiry) else {
            throw ValidationError("--cluster-expiry must be between 3 and 86400 seconds, not \(clusterExpiry)")
        }
        if cluster == nil, clusterPasswordFile != nil || clusterInstance != nil {
            throw ValidationError("--cluster-password-file and --cluster-instance need --cluster")
        }
        if let clusterInstance, !ClusterSettings.isValidInstance(clusterInstance) {
            throw ValidationError("--cluster-instance must be 1 to \(ClusterSettings.maxInstanceLength) of A-Z a-z 0-9 _ . -, not \(clusterInstance)")
        }
        guard !authProgramUser.isEmpty else { throw ValidationError("--auth-program-user must not be empty") }
        if let authProgram, !authProgram.hasPrefix("/") {
            throw ValidationError("--auth-program must be an absolute path, not \(authProgram)")
        }
        if keys != nil {
            let list = keyList
            guard !list.isEmpty, list.count <= BrokerSettings.maxExtraKeys + 1 else {
                throw ValidationError("--keys needs between 1 and \(BrokerSettings.maxExtraKeys + 1) comma-separated keys")
            }
            for room in list.dropFirst() where room.utf8.count > BrokerSettings.maxExtraKeyLength {
                throw ValidationError("--keys: each key after the first is at most \(BrokerSettings.maxExtraKeyLength) bytes; `\(room)` is longer")
            }
        }
        guard !user.isEmpty else { throw ValidationError("--user must not be empty") }
        guard chroot.hasPrefix("/") else { throw ValidationError("--chroot must be an absolute path, not \(chroot)") }
        guard SeccompPolicy.named(probePolicy) != nil else { throw ValidationError("--policy: unknown policy \(probePolicy)") }
        guard (sslkey == nil) == (sslcert == nil) else {
            throw ValidationError("--sslkey and --sslcert go together: PeerServer will not run because either the key or the certificate has not been provided")
        }
        if sslkeyPassphraseFile != nil, sslkey == nil {
            throw ValidationError("--sslkey-passphrase-file needs --sslkey and --sslcert")
        }
        if httpsHost != nil, httpsPort == nil {
            throw ValidationError("--https-host needs --https-port")
        }
        if let httpsPort {
            guard sslkey != nil else { throw ValidationError("--https-port needs --sslkey and --sslcert") }
            guard (0...65535).contains(httpsPort) else {
                throw ValidationError("--https-port must be between 0 and 65535, not \(httpsPort)")
            }
            guard httpsPort == 0 || httpsPort != port || (httpsHost != nil && httpsHost != host) else {
                throw ValidationError("--https-port must differ from --port (\(port)); leave it out to make --port itself TLS")
            }
        }
    }

    /// The TLS files, when both are given (validate() rejects one without the other).
    var tlsFiles: TLSFiles? {
        guard let sslkey, let sslcert else { return nil }
        return TLSFiles(keyPath: sslkey, certificatePath: sslcert, passphrasePath: sslkeyPassphraseFile)
    }

    /// `--keys` split at commas (empty entries dropped); `[--key]` without it.
    var keyList: [String] {
        guard let keys else { return [key] }
        return keys.split(separator: ",").map { String($0.filter { $0 != " " }) }.filter { !$0.isEmpty }
    }

    /// `--proxied=ADDR,…` split at commas, blanks dropped.
    static func trustedProxies(_ list: String) -> [String] {
        list.split(separator: ",").map { String($0.filter { $0 != " " }) }.filter { !$0.isEmpty }
    }

    /// Whether `text` is an IPv4 or IPv6 address in numeric form (inet_pton).
    static func isNumericAddress(_ text: String) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(AF_INET, text, &buffer) == 1 || inet_pton(AF_INET6, text, &buffer) == 1
    }

    /// Rewrites `--proxied=ADDR,…` (a flag with an optional value, which ArgumentParser cannot
    /// declare) into `--proxied --proxied-by ADDR,…`; every other argument is kept.
    static func normalise(_ arguments: [String]) -> [String] {
        var result: [String] = []
        for argument in arguments {
            if argument.hasPrefix("--proxied=") {
                result += ["--proxied", "--proxied-by", String(argument.dropFirst("--proxied=".count))]
            } else {
                result.append(argument)
            }
        }
        return result
    }

    /// Whether an auth helper runs (a users file or a policy program is configured).
    var authEnabled: Bool { authUsers != nil || authProgram != nil || authJWTKey != nil }

    /// What the supervisor tells the auth helper in `authHello`.
    var authSettings: AuthHelperSettings {
        AuthHelperSettings(
            process: ChildSettings(logLevel: logLevel, user: authUser, sandboxDebug: sandboxDebug),
            programUser: authProgramUser, timeoutMs: UInt32(authTimeout), usersPath: authUsers ?? "",
            programPath: authProgram ?? "", jwtKeyPath: authJWTKey ?? "", jwtAudience: authJWTAudience ?? "",
            jwtIssuer: authJWTIssuer ?? "")
    }

    /// The helper's options from its settings (the supervisor's start-up check uses the same).
    static func authOptions(_ settings: AuthHelperSettings) -> AuthHelperOptions {
        func given(_ text: String) -> String? { text.isEmpty ? nil : text }
        let (audience, issuer) = (given(settings.jwtAudience), given(settings.jwtIssuer))
        return AuthHelperOptions(
            usersPath: given(settings.usersPath), programPath: given(settings.programPath), timeoutMs: Int(settings.timeoutMs),
            jwtKeyPath: given(settings.jwtKeyPath),
            makeVerifier: { (path) throws(AuthError) in try JWTVerifier.load(path: path, audience: audience, issuer: issuer) })
    }

    var brokerSettings: BrokerSettings {
        let rooms = keyList
        return BrokerSettings(
            key: rooms.first ?? key, path: path, expireTimeoutMs: UInt32(expireTimeout), aliveTimeoutMs: UInt32(aliveTimeout),
            cleanupIntervalMs: UInt32(cleanupOutMsgs), concurrentLimit: UInt32(concurrentLimit),
            allowDiscovery: allowDiscovery, proxied: proxied, corsOrigins: cors,
            maxMessageBytes: UInt32(maxMessageSize), handshakeTimeoutMs: UInt32(handshakeTimeout),
            extraKeys: Array(rooms.dropFirst()), authTimeoutMs: authEnabled ? UInt32(authTimeout) : 0,
            authEvents: authProgram != nil || (Logger.Level(rawValue: logLevel) ?? .info) <= .info,
            ipLimit: UInt32(ipLimit), ipHandshakeLimit: UInt32(ipHandshakeLimit), handshakeLimit: UInt32(handshakeLimit),
            outputLimit: UInt32(outputLimit), maxHeaderBytes: UInt32(maxHeaderSize),
            trustedProxies: proxiedBy.map(Self.trustedProxies) ?? [], process: brokerProcess, clustered: cluster != nil,
            takeoverTimeoutMs: UInt32(takeoverTimeout))
    }

    /// The options read at start only, as given, compared on SIGHUP (they wait for a restart).
    var startOnlyOptions: [String] {
        [cluster ?? "", clusterPasswordFile ?? "", clusterInstance ?? "", String(clusterExpiry), clusterUser, String(reusePort),
         metricsPort.map(String.init) ?? "", metricsHost]
    }

    /// The cluster role's sandbox: its own user, the broker's empty chroot, the `cluster` policy.
    var clusterProcess: ChildSettings {
        ChildSettings(logLevel: logLevel, user: clusterUser, chrootDirectory: chroot, sandboxDebug: sandboxDebug)
    }

    /// Parses the command line, with the configuration file's settings (if `--config` names
    /// one) placed before it so that explicit flags win.
    static func parseWithConfiguration(_ arguments: [String]) throws -> PeerJSCommand {
        let arguments = normalise(arguments)
        let direct = try parse(arguments)
        guard let path = direct.config, direct.role == nil else { return direct }
        let file: ConfigurationFile
        do {
            file = try ConfigurationFile.load(path: path)
        } catch {
            throw ValidationError("--config: \(error)")
        }
        return try parse(normalise(file.arguments) + arguments)
    }

    /// Enters the sandbox `process` describes with `seccomp` (the broker's, or the probe's
    /// `--policy`) and logs what it did. Runs once the role's threads exist and before any
    /// untrusted byte is read.
    func confine(_ process: ChildSettings, seccomp: SeccompPolicy, openFiles: UInt64, logger: Logger) throws {
        let chrootDirectory = process.chrootDirectory.isEmpty ? nil : process.chrootDirectory
        let policy = SandboxPolicy(
            user: process.user, chrootDirectory: chrootDirectory, openFiles: openFiles, seccomp: seccomp,
            debug: process.sandboxDebug)
        let report = try Sandbox.apply(policy)
        let filter = "RLIMIT_NOFILE \(report.openFiles), seccomp \(policy.seccomp.role) (\(process.sandboxDebug ? "trap" : "kill"))"
        if let skipped = report.skipped {
            logger.notice("sandbox: \(skipped); \(filter)")
        } else if let identity = report.identity {
            logger.info("sandbox: \(chrootDirectory.map { "chroot \($0)" } ?? "no chroot"), uid \(identity.uid) gid \(identity.gid), \(filter)")
        }
    }

    /// How this process runs, from the command line: the broker's (sent in its `hello`), or the
    /// sandbox probe's (which has no supervisor).
    var brokerProcess: ChildSettings {
        ChildSettings(logLevel: logLevel, user: user, chrootDirectory: chroot, sandboxDebug: sandboxDebug)
    }

    /// The auth helper's sandbox: its own user, no chroot (it re-reads its policy files), the
    /// `auth` seccomp policy (no network, no new programs); its policy program starts just before
    /// the helper's change of user, as `--auth-program-user` (as the helper's user when nothing
    /// can be changed).
    func confineAuthHelper(
        _ settings: AuthHelperSettings, logger: Logger,
        startProgram: (RoleSpawner.ProgramUser?) throws -> Void, beforeFilter: () throws -> Void
    ) throws {
        let (authUser, sandboxDebug) = (settings.process.user, settings.process.sandboxDebug)
        let policy = SandboxPolicy(user: authUser, chrootDirectory: nil, openFiles: 64, seccomp: .auth, debug: sandboxDebug)
        let report = try Sandbox.apply(policy, beforeUserChange: { (canChangeUser) throws(SandboxError) in
            do {
                // The broker's user is not known here; the supervisor checked it at start-up.
                let user = canChangeUser && !settings.programPath.isEmpty
                    ? try PolicyProgramUser.lookUp(settings.programUser, helperUser: authUser, brokerUser: nil) : nil
                try startProgram(user)
                if let user { logger.info("policy program started as \(user.name) (uid \(user.uid), gid \(user.gid))") }
            } catch { throw SandboxError(.roleSetup, "\(error)") }
        }, beforeFilter: { () throws(SandboxError) in
            do { try beforeFilter() } catch { throw SandboxError(.roleSetup, "\(error)") }
        })
        let filter = "seccomp auth (\(sandboxDebug ? "trap" : "kill"))"
        if let skipped = report.skipped {
            logger.notice("sandbox: \(skipped); \(filter)")
        } else if let identity = report.identity {
            logger.info("sandbox: uid \(identity.uid) gid \(identity.gid), \(filter)")
        }
    }

    func run() throws {
        try run(arguments: Array(CommandLine.arguments.dropFirst()))
    }

    func run(arguments: [String]) throws {
        let journald = getenv("JOURNAL_STREAM") != nil
        let label = "peerjs[\(role ?? "supervisor")]"
        JournalLogHandler.setLevel(logLevel)  // a child's comes again in its hello
        LoggingSystem.bootstrap { _ in JournalLogHandler(label: label, journald: journald) }
        let logger = Logger(label: label)

        // Every process of the service, from its first step: no process of the same user may
        // ptrace it or read its environment, memory or descriptors (PrivilegeDrop.setNotDumpable).
        do { try PrivilegeDrop.setNotDumpable() } catch {
            logger.critical("\(error)")
            throw ExitCode(role == nil ? 1 : 3)
        }
        if role != nil {
            // Before any thread starts: capabilities are per thread (see PrivilegeDrop).
            do { try PrivilegeDrop.dropCapabilitiesBeforeThreads() } catch {
                logger.critical("cannot enter the sandbox: \(error)")
                throw ExitCode(3)
            }
        }
        if let role, let run = Self.childRoles[role] {
            throw ExitCode(run(self, logger))
        }
        // Every setting fits its hello, or the start stops here, not in a restart loop.
        do {
            _ = try brokerSettings.encodeChecked()
            if authEnabled { _ = try authSettings.encodeChecked() }
        } catch {
            logger.critical("a setting is too long to hand to its process (--user and --auth-user at most \(ChildSettings.maxUserLength) bytes, paths at most \(ChildSettings.maxPathLength)): \(error)")
            throw ExitCode(78)
        }
        if authEnabled {
            // Checked now, as root: a broken users file is a start-up error naming file:line.
            do {
                _ = try Self.authOptions(authSettings).loadPolicy()
            } catch {
                logger.critical("\(error.description)")
                throw ExitCode(78)
            }
            if let authProgram, access(authProgram, X_OK) != 0 {
                logger.critical("--auth-program \(authProgram) is not an executable file: \(String(cString: strerror(errno)))")
                throw ExitCode(78)
            }
            // The program's own user, when it will be used (peerjs can change users).
            if authProgram != nil, let capabilities = try? PrivilegeDrop.effectiveCapabilities(),
               PrivilegeDrop.canDrop(capabilities: capabilities) {
                do { _ = try PolicyProgramUser.lookUp(authProgramUser, helperUser: authUser, brokerUser: user) } catch {
                    logger.critical("\(error)")
                    throw ExitCode(78)
                }
            }
        }
        var clusterSettings: ClusterSettings?
        if let cluster {
            do {
                clusterSettings = try ClusterConfiguration.settings(
                    url: cluster, passwordFile: clusterPasswordFile, instance: clusterInstance,
                    expirySeconds: UInt32(clusterExpiry), process: clusterProcess)
                _ = try clusterSettings?.encodeChecked()
            } catch {
                logger.critical("\(error)")
                throw ExitCode(78)
            }
        }
        var reload: (@Sendable () throws -> SupervisorConfiguration.Reloaded)?
        if config != nil {
            reload = {
                let command = try Self.parseWithConfiguration(arguments)
                return SupervisorConfiguration.Reloaded(
                    broker: command.brokerSettings, auth: command.authEnabled ? command.authSettings : nil,
                    startOnlyOptions: command.startOnlyOptions)
            }
        }
        var configuration = SupervisorConfiguration(
            host: host, port: UInt16(port), broker: brokerSettings, executable: "/proc/self/exe",
            argv0: CommandLine.arguments.first ?? "peerjs", reload: reload, tls: tlsFiles,
            httpsPort: httpsPort.map { UInt16($0) }, httpsHost: httpsHost, auth: authEnabled ? authSettings : nil)
        configuration.cluster = clusterSettings
        configuration.reusePort = reusePort
        configuration.metricsPort = metricsPort.map { UInt16($0) }
        configuration.metricsHost = metricsHost
        configuration.startOnlyOptions = startOnlyOptions
        do {
            throw ExitCode(try Supervisor(configuration: configuration, logger: logger).run())
        } catch let error as SupervisorError {
            logger.critical("\(error.description)")
            // EX_OSERR for sockets, EX_CONFIG for unusable TLS files, 1 otherwise.
            throw ExitCode(error.code == .bind || error.code == .resolve ? 71 : error.code == .tls ? 78 : 1)
        }
    }
}
