import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// How a child process ended.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    /// Normal exit with this status.
    case exited(Int32)
    /// Terminated by this signal.
    case signaled(Int32)

    init(waitStatus status: Int32) {
        if status & 0x7f == 0 {
            self = .exited((status >> 8) & 0xff)
        } else {
            self = .signaled(status & 0x7f)
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): return "exit status \(code)"
        case .signaled(let signal): return "signal \(signal)"
        }
    }
}

/// The stderr/stdout lines of a child, collected continuously by a reader thread.
final class LineLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    private var partial: [UInt8] = []
    private(set) var reachedEOF = false
    let echoPrefix: String?

    init(echoPrefix: String?) {
        self.echoPrefix = echoPrefix
    }

    var snapshot: [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }

    var isAtEOF: Bool {
        lock.lock()
        defer { lock.unlock() }
        return reachedEOF
    }

    func append(_ bytes: ArraySlice<UInt8>) {
        lock.lock()
        var newLines: [String] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                newLines.append(String(decoding: partial, as: UTF8.self))
                partial.removeAll(keepingCapacity: true)
            } else {
                partial.append(byte)
            }
        }
        lines.append(contentsOf: newLines)
        lock.unlock()
        if let echoPrefix {
            for line in newLines { FileHandle.standardError.write(Data("\(echoPrefix)\(line)\n".utf8)) }
        }
    }

    func finish() {
        lock.lock()
        if !partial.isEmpty {
            lines.append(String(decoding: partial, as: UTF8.self))
            partial.removeAll()
        }
        reachedEOF = true
        lock.unlock()
    }

    /// Starts a detached thread reading `fd` until EOF, then closes it.
    func startReading(fd: Int32) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    self.append(buffer[0..<count])
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            close(fd)
            self.finish()
        }
        thread.name = "peerjs-log-reader"
        thread.start()
    }
}


/// A child process a test started (the server, a sandbox probe, `openssl`, `setpriv` …): in a
/// process group of its own (``ChildSpawner``), its stdout and stderr read into lines by a
/// thread, so that the tests wait for what it prints and for its end with async, bounded waits
/// and never block a thread of the cooperative pool. Its group is killed and the child reaped
/// at the latest when the value goes.
public final class ChildProcess: @unchecked Sendable {
    /// The process id (also the id of its process group).
    public let pid: Int32
    /// What was run, for messages.
    public let commandLine: String
    private let log: LineLog
    private let ended = Locked<ExitStatus?>(nil)

    /// Spawns `executable arguments` (argv[0] is `executable`).
    /// - Parameters:
    ///   - environment: `NAME=value` entries; nil passes this process's environment on.
    ///   - stderrFile: append stderr to this file instead of capturing it with stdout.
    ///   - echoPrefix: also echo every line to the test's stderr with this prefix.
    public init(
        _ executable: String, _ arguments: [String], environment: [String]? = nil, stderrFile: String? = nil,
        echoPrefix: String? = nil
    ) throws {
        let (pid, output) = try ChildSpawner.spawn(executable, arguments, environment: environment, stderrFile: stderrFile)
        self.pid = pid
        self.commandLine = ([executable] + arguments).joined(separator: " ")
        log = LineLog(echoPrefix: echoPrefix)
        log.startReading(fd: output)
    }

    deinit {
        if ended.current == nil {
            Glibc.kill(-pid, SIGKILL)
            Glibc.kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
    }

    /// Every line printed so far (stdout and stderr interleaved).
    public var lines: [String] { log.snapshot }

    /// Everything printed so far, one line after another.
    public var output: String { lines.map { $0 + "\n" }.joined() }

    /// How the child ended, once it has been reaped.
    public var exitStatus: ExitStatus? { ended.current }

    /// Sends `signal` to the child only (not its group), while it runs.
    public func signal(_ signal: Int32) {
        if ended.current == nil { Glibc.kill(pid, signal) }
    }

    /// Waits (bounded) for a line, at index `startIndex` or later, for which `predicate` holds.
    /// Throws when the output ends or `timeout` passes without one, with the output so far.
    /// - Parameters:
    ///   - startIndex: ignore lines before this index (take `lines.count` before an action).
    ///   - description: what is awaited, for the error.
    public func waitForLine(
        from startIndex: Int = 0, timeout: Duration = .seconds(20), _ description: String,
        where predicate: (String) -> Bool
    ) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            let atEOF = log.isAtEOF
            let lines = log.snapshot
            if startIndex < lines.count, let line = lines[startIndex...].first(where: predicate) { return line }
            let seen = lines.dropFirst(startIndex).joined(separator: "\n")
            if atEOF { throw HarnessError("\(commandLine): output ended without \(description); lines since #\(startIndex):\n\(seen)") }
            if ContinuousClock.now >= deadline {
                throw HarnessError("\(commandLine): no \(description) within \(timeout); lines since #\(startIndex):\n\(seen)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits at most `timeout` for the child to end and reaps it, then (bounded) for the rest
    /// of its output; kills its group and returns nil if it did not end in time.
    public func wait(timeout: Duration) async -> ExitStatus? {
        let deadline = ContinuousClock.now + timeout
        while ended.current == nil {
            if reap(options: WNOHANG) { break }
            if ContinuousClock.now >= deadline {
                killGroup()
                return nil
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        let drain = ContinuousClock.now + .seconds(2)
        while !log.isAtEOF && ContinuousClock.now < drain { try? await Task.sleep(for: .milliseconds(10)) }
        return ended.current
    }

    /// SIGTERM, then SIGKILL to the whole group after `timeout`; returns how the child ended.
    @discardableResult
    public func stop(timeout: Duration = .seconds(5)) async -> ExitStatus {
        if let done = ended.current { return done }
        Glibc.kill(pid, SIGTERM)
        if let status = await wait(timeout: timeout) { return status }
        return ended.current ?? .signaled(SIGKILL)
    }

    /// SIGKILL to the group (descendants included), then reaps the child.
    public func killGroup() {
        guard ended.current == nil else { return }
        Glibc.kill(-pid, SIGKILL)
        Glibc.kill(pid, SIGKILL)
        _ = reap(options: 0)
    }

    /// Reaps the child if it has ended (or, without WNOHANG, once it does); a descendant left
    /// in its group (a broker that outlived its supervisor) is killed first: a zombie still holds
    /// the group's id, so it cannot have been reused.
    private func reap(options: Int32) -> Bool {
        if options == WNOHANG, ServerProcess.isAlive(pid) { return false }
        if options == WNOHANG { Glibc.kill(-pid, SIGKILL) }
        var status: Int32 = 0
        let result = waitpid(pid, &status, options)
        guard result == pid else { return false }
        ended.withLock { $0 = ExitStatus(waitStatus: status) }
        return true
    }

    /// Runs `executable arguments` to its end (bounded: killed and an error after `timeout`)
    /// and returns its status and output.
    public static func run(
        _ executable: String, _ arguments: [String], timeout: Duration = .seconds(30)
    ) async throws -> (status: ExitStatus, output: [String]) {
        let child = try ChildProcess(executable, arguments)
        guard let status = await child.wait(timeout: timeout) else {
            throw HarnessError("\(child.commandLine) did not exit within \(timeout); output:\n\(child.output)")
        }
        return (status, child.lines)
    }
}

extension ChildProcess {
    /// The port of peerjs's listener named `name` (`http` or `https`), from its `listening on`
    /// line (waited for, bounded).
    public func listenerPort(_ name: String) async throws -> Int {
        let line = try await waitForLine("a listening line for \(name)") { $0.contains("listening on") && $0.contains("(\(name),") }
        guard let range = line.range(of: " port "), let port = Int(line[range.upperBound...].prefix(while: \.isNumber)) else {
            throw HarnessError("cannot parse the port in: \(line)")
        }
        return port
    }

    /// The children of this process (peerjs's broker and auth helper), from /proc.
    public var childPIDs: [Int32] { ServerProcess.children(of: pid) }
}
