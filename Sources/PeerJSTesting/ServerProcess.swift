import CShim
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A running `peerjs` binary (the supervisor) started by a test, with its output captured.
///
/// Launch with ``launch(_:startupTimeout:)`` or, better, ``withServer(_:_:)``, which stops it whatever happens.
/// The process runs in its own process group, so ``stop(timeout:)`` (and `deinit`, as a last resort) also reach a
/// broker that outlived its supervisor. Nothing outside the group is ever signalled.
/// - Parameters:
///   - pid: the supervisor's process id.
///   - port: the TCP port from the `Started PeerServer on …, port: N, path: …` line.
public final class ServerProcess: @unchecked Sendable {
    /// The supervisor's process id (the process the harness spawned).
    public let pid: Int32
    /// The address the server listens on (as passed with `--host`).
    public let host: String
    /// The real bound port, parsed from the Started line.
    public let port: Int
    /// The base path `B` (always starts and ends with `/`).
    public let basePath: String
    /// The key clients must use (from `--key`/`-k`, default `peerjs`).
    public let key: String
    /// The full argument list given to the binary.
    public let arguments: [String]

    /// The supervisor as a child of the test: its output, its end.
    public let process: ChildProcess

    private init(process: ChildProcess, host: String, port: Int, basePath: String, key: String, arguments: [String]) {
        self.process = process
        self.pid = process.pid
        self.host = host
        self.port = port
        self.basePath = basePath
        self.key = key
        self.arguments = arguments
    }

    // MARK: Locating and spawning

    /// The path of the `peerjs` binary (or of another executable of the package, by `name`): for `peerjs` env
    /// `PEERJS_BINARY` if set, else a sibling of the running test bundle found by walking up from `/proc/self/exe`.
    public static func locateBinary(_ name: String = "peerjs") throws -> String {
        if name == "peerjs", let override = ProcessInfo.processInfo.environment["PEERJS_BINARY"], !override.isEmpty {
            return override
        }
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: exe).deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = directory.appendingPathComponent(name).path
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
                FileManager.default.isExecutableFile(atPath: candidate)
            {
                return candidate
            }
            directory = directory.deletingLastPathComponent()
        }
        throw HarnessError(
            "\(name) binary not found next to \(exe); build it (swift build --build-tests)\(name == "peerjs" ? " or set PEERJS_BINARY" : "")"
        )
    }

    /// Starts `peerjs arguments` (with ``sandboxUserArguments(_:)`` added), or `launcher…
    /// peerjs arguments` (`systemd-socket-activate`, `setpriv`), without waiting for anything.
    /// - Parameters:
    ///   - environment: the whole environment (`NAME=value`); nil passes the test's on, without
    ///     the journal and socket activation variables of the test's own service manager.
    public static func spawn(_ arguments: [String], launcher: [String] = [], environment: [String]? = nil) throws -> ChildProcess {
        let peerjs = try locateBinary()
        let full = arguments + sandboxUserArguments(arguments)
        let inherited = ProcessInfo.processInfo.environment
            .filter { !["JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"].contains($0.key) }
            .map { "\($0.key)=\($0.value)" }
        let echo = ProcessInfo.processInfo.environment["PEERJS_TEST_ECHO"] != nil ? "[peerjs] " : nil
        if let first = launcher.first {
            return try ChildProcess(first, Array(launcher.dropFirst()) + [peerjs] + full, environment: environment ?? inherited, echoPrefix: echo)
        }
        return try ChildProcess(peerjs, full, environment: environment ?? inherited, echoPrefix: echo)
    }

    /// Launches the server and waits (bounded) for its `Started PeerServer on …` line.
    ///
    /// `--host 127.0.0.1` and `--port 0` are added unless the arguments already name a host or port.
    /// - Parameters:
    ///   - arguments: command-line flags for `peerjs`.
    ///   - environment: the supervisor's whole environment (`NAME=value`); nil passes the test's on.
    ///   - startupTimeout: how long to wait for the Started line.
    public static func launch(
        _ arguments: [String],
        environment: [String]? = nil,
        startupTimeout: Duration = .seconds(15)
    ) async throws -> ServerProcess {
        var full = arguments
        if !full.contains(where: { ["--host", "-H"].contains($0) || $0.hasPrefix("--host=") }) {
            full = ["--host", "127.0.0.1"] + full
        }
        if !full.contains(where: { ["--port", "-p"].contains($0) || $0.hasPrefix("--port=") }) {
            full = ["--port", "0"] + full
        }
        await StartupGate.shared.enter()
        let process: ChildProcess
        let startedLine: String
        do {
            process = try spawn(full, environment: environment)
        } catch {
            await StartupGate.shared.leave()
            throw error
        }
        do {
            startedLine = try await process.waitForLine(timeout: startupTimeout, "'Started PeerServer on …' line") {
                $0.contains("Started PeerServer on")
            }
            await StartupGate.shared.leave()
        } catch {
            await StartupGate.shared.leave()
            process.killGroup()
            throw HarnessError("\(error) (\(process.exitStatus.map { "\($0)" } ?? "killed"))")
        }
        guard let port = Self.parse(startedLine, after: "port: ").flatMap({ Int($0) }) else {
            process.killGroup()
            throw HarnessError("no port in the Started line: \(startedLine)")
        }
        let host = Self.value(of: ["--host", "-H"], in: full) ?? "127.0.0.1"
        let key = Self.value(of: ["--key", "-k"], in: full) ?? "peerjs"
        let path = Self.value(of: ["--path"], in: full) ?? "/"
        return ServerProcess(
            process: process, host: host, port: port, basePath: normalizeBasePath(path), key: key, arguments: full)
    }

    /// Run as root, the broker drops to `--user` (default `_peerjs`) and the auth helper to
    /// `--auth-user` (default `_peerjs-auth`), its policy program to `--auth-program-user`
    /// (default `_peerjs-policy`); `scripts/setup.sh` and the Debian package create them. Tests
    /// use those defaults when they exist, else name `nobody` (`daemon` for the program), unless
    /// they chose a user themselves.
    public static func sandboxUserArguments(_ arguments: [String]) -> [String] {
        guard geteuid() == 0 else { return [] }
        var extra: [String] = []
        if !arguments.contains(where: { $0 == "--user" || $0.hasPrefix("--user=") }), getpwnam("_peerjs") == nil {
            extra += ["--user", "nobody"]
        }
        if !arguments.contains(where: { $0 == "--auth-user" || $0.hasPrefix("--auth-user=") }), getpwnam("_peerjs-auth") == nil {
            extra += ["--auth-user", "nobody"]
        }
        if arguments.contains("--cluster"),
           !arguments.contains(where: { $0 == "--cluster-user" || $0.hasPrefix("--cluster-user=") }), getpwnam("_peerjs-cluster") == nil {
            extra += ["--cluster-user", "nobody"]
        }
        // The policy program's user must differ from both (`daemon`, when it exists).
        if !arguments.contains(where: { $0 == "--auth-program-user" || $0.hasPrefix("--auth-program-user=") }),
           getpwnam("_peerjs-policy") == nil, getpwnam("daemon") != nil {
            extra += ["--auth-program-user", "daemon"]
        }
        return extra
    }

    /// Runs `peerjs arguments` to completion (for `--help` and flag validation) and returns its status and output.
    /// - Parameters:
    ///   - arguments: command-line flags.
    ///   - timeout: bound after which the process is killed and an error thrown.
    ///   - binary: the executable next to the tests to run instead of `peerjs` (e.g. `peerjs-bench`).
    public static func run(
        _ arguments: [String],
        binary: String = "peerjs",
        timeout: Duration = .seconds(10)
    ) async throws -> (
        status: ExitStatus, output: [String]
    ) {
        try await ChildProcess.run(try locateBinary(binary), arguments, timeout: timeout)
    }

    /// Starts a server, runs `body`, and stops the server even when `body` throws. On error, prints its output.
    /// - Parameters:
    ///   - arguments: command-line flags for `peerjs`.
    ///   - environment: the supervisor's whole environment (`NAME=value`); nil passes the test's on.
    ///   - body: the code using the server.
    public static func withServer<T>(
        _ arguments: [String],
        environment: [String]? = nil,
        _ body: (ServerProcess) async throws -> T
    ) async throws -> T {
        let server = try await launch(arguments, environment: environment)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            server.printLog(header: "peerjs output (\(error))")
            await server.stop()
            throw error
        }
    }

    // MARK: URLs

    /// `http://host:port/B` — the base of the HTTP routes.
    public var httpURL: String { "http://\(host):\(port)\(basePath)" }

    /// The WebSocket path `B peerjs` (e.g. `/peerjs`, `/myapp/peerjs`).
    public var webSocketPath: String { basePath + "peerjs" }

    /// `ws://host:port/B peerjs?key=…&id=…&token=…` as a 1.x browser client builds it (values inserted raw).
    /// - Parameters:
    ///   - id: the peer id.
    ///   - token: the client's token.
    ///   - key: the key; the server's own by default.
    public func webSocketURL(id: String, token: String, key: String? = nil) -> String {
        "ws://\(host):\(port)\(webSocketPath)?key=\(key ?? self.key)&id=\(id)&token=\(token)"
    }

    // MARK: Output

    /// Every line the process group printed so far (stdout and stderr interleaved).
    public var logLines: [String] { process.lines }

    /// Prints the captured output (the last `limit` lines) to standard output.
    /// - Parameters:
    ///   - header: a title line.
    ///   - limit: maximum number of lines.
    public func printLog(header: String = "peerjs output", limit: Int = 200) {
        let lines = logLines
        let shown = lines.suffix(limit)
        var text = "----- \(header) (pid \(pid), port \(port), \(lines.count) lines"
        text += lines.count > limit ? ", last \(limit)) -----\n" : ") -----\n"
        text += shown.joined(separator: "\n") + "\n----- end of peerjs output -----\n"
        print(text)
    }

    /// Waits (bounded) for an output line, at index `startIndex` or later, for which `predicate` holds.
    /// (``ChildProcess/waitForLine(from:timeout:_:where:)``, which also stops at the end of the output.)
    /// - Parameters:
    ///   - startIndex: ignore lines before this index (use `logLines.count` taken before an action).
    ///   - timeout: bound of the wait.
    ///   - description: what is awaited, for the error.
    ///   - predicate: the test on a line.
    public func waitForLog(
        from startIndex: Int = 0,
        timeout: Duration = .seconds(10),
        _ description: String,
        where predicate: (String) -> Bool
    ) async throws -> String {
        try await process.waitForLine(from: startIndex, timeout: timeout, description, where: predicate)
    }

    // MARK: Processes

    /// Child process ids of `pid`, from `/proc/<pid>/task/<tid>/children`.
    /// - Parameters:
    ///   - pid: a process id.
    public static func children(of pid: Int32) -> [Int32] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var result: [Int32] = []
        for task in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8) else {
                continue
            }
            result += text.split(separator: " ").compactMap {
                Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        return Array(Set(result)).sorted()
    }

    /// The supervisor's direct children.
    public func childPIDs() -> [Int32] { Self.children(of: pid) }

    /// The broker's pid: the supervisor's child whose command line has `--role broker` (or the only child).
    public func brokerPID() -> Int32? {
        let kids = childPIDs()
        for kid in kids {
            if let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(kid)/cmdline")) {
                let args = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                if let index = args.firstIndex(of: "--role"), index + 1 < args.count, args[index + 1] == "broker" {
                    return kid
                }
                if args.contains("--role=broker") { return kid }
            }
        }
        return kids.count == 1 ? kids[0] : nil
    }

    /// Waits (bounded) until a broker child exists that is not `excluded`, and returns its pid.
    /// - Parameters:
    ///   - excluded: a pid that does not count (e.g. the broker just killed).
    ///   - timeout: bound of the wait.
    public func waitForBroker(other excluded: Int32? = nil, timeout: Duration = .seconds(10)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let broker = brokerPID(), broker != excluded { return broker }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw HarnessError(
            "no broker child (other than \(excluded.map(String.init) ?? "none")) of supervisor \(pid) within \(timeout); children: \(childPIDs())"
        )
    }

    /// Whether `pid` still exists (and is not a zombie).
    /// - Parameters:
    ///   - pid: a process id.
    public static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        // Field 3 (after the parenthesised name) is the state.
        guard let close = stat.lastIndex(of: ")") else { return false }
        let rest = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces)
        return !rest.hasPrefix("Z") && !rest.hasPrefix("X")
    }

    /// How the supervisor ended, once it has been reaped.
    public var exitStatus: ExitStatus? { process.exitStatus }

    /// Sends `signal` to the supervisor only.
    /// - Parameters:
    ///   - signal: e.g. `SIGTERM`.
    public func signal(_ signal: Int32) { process.signal(signal) }

    /// Waits for the supervisor's exit (reaping it, and killing what is left of its group) until
    /// `timeout`; returns its status, or `nil` (the group killed) when it is still running.
    public func waitForExit(timeout: Duration) async -> ExitStatus? { await process.wait(timeout: timeout) }

    /// Stops the server: SIGTERM, then SIGKILL to the whole process group after `timeout`; reaps the supervisor and
    /// kills any descendant left in the group. Returns how the supervisor ended.
    @discardableResult
    public func stop(timeout: Duration = .seconds(5)) async -> ExitStatus { await process.stop(timeout: timeout) }

    /// The port of the listener named `name` (`http` or `https`), from its `listening on` line.
    public func listenerPort(_ name: String) async throws -> Int { try await process.listenerPort(name) }

    // MARK: Parsing helpers

    static func parse(_ line: String, after marker: String) -> String? {
        guard let range = line.range(of: marker) else { return nil }
        let rest = line[range.upperBound...]
        let token = rest.prefix(while: { $0.isNumber })
        return token.isEmpty ? nil : String(token)
    }

    static func value(of names: [String], in arguments: [String]) -> String? {
        var result: String?
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if names.contains(argument), index + 1 < arguments.count {
                result = arguments[index + 1]
                index += 2
                continue
            }
            for name in names where name.hasPrefix("--") && argument.hasPrefix(name + "=") {
                result = String(argument.dropFirst(name.count + 1))
            }
            index += 1
        }
        return result
    }
}

/// Normalises a `path` option to the base path `B`: starts and ends with `/`.
/// - Parameters:
///   - path: e.g. `/`, `/myapp`, `myapp/`.
public func normalizeBasePath(_ path: String) -> String {
    var result = path.hasPrefix("/") ? path : "/" + path
    if !result.hasSuffix("/") { result += "/" }
    return result
}

/// At most two servers start at once. Every suite launches its server at the first instant of a
/// test run; thirty starting together (each ~90 ms of CPU) on a 2-core machine stalled the first
/// tests' deadlines by seconds, about one full run in two. Spread out, the same starts cost the
/// run about two seconds and no test its timing.
actor StartupGate {
    static let shared = StartupGate(limit: 2)
    private let limit: Int
    private var starting = 0
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) {
        self.limit = limit
    }

    func enter() async {
        guard starting >= limit else {
            starting += 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Lets the next waiting start go (its slot passes on), or frees a slot.
    func leave() {
        guard waiting.isEmpty else {
            waiting.removeFirst().resume()
            return
        }
        starting -= 1
    }
}
