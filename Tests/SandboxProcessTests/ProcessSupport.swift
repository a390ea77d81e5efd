import Foundation
import Glibc
import PeerJSTesting

// Helpers of this target on top of PeerJSTesting's spawner: run the real binary (or a sandbox
// probe) with its output captured, bounded waits, a throwaway chroot directory.

/// How a child ended.
enum Termination: Equatable, CustomStringConvertible {
    case exited(Int32)
    case signalled(Int32)

    init(waitStatus status: Int32) {
        self = status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
    }

    var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signalled(let signal): "signal \(signal)"
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The `peerjs` binary (PeerJSTesting's lookup: env PEERJS_BINARY, else next to the tests).
func peerjsBinary() throws -> String { try ServerProcess.locateBinary() }

/// Output lines of a child, read continuously by a thread.
final class OutputLog: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    private var closed = false

    init(reading fd: Int32) {
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                let chunk = String(decoding: buffer[0..<n], as: UTF8.self)
                lock.withLock { text += chunk }
            }
            close(fd)
            lock.withLock { closed = true }
        }
        thread.start()
    }

    var contents: String { lock.withLock { text } }
    var atEOF: Bool { lock.withLock { closed } }

    /// Waits (bounded) until `predicate` matches the output so far; returns the output. Sleeps
    /// between looks with Task.sleep, so no cooperative-pool thread is held while it waits.
    func wait(seconds: Double, until predicate: (String) -> Bool) async -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let current = contents
            if predicate(current) { return current }
            if atEOF { return predicate(contents) ? contents : nil }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return nil
    }
}

/// A child process in its own process group, stdout and stderr captured; killed (group) and
/// reaped at the latest when released.
final class Child: @unchecked Sendable {
    let pid: pid_t
    let output: OutputLog
    private var ended: Termination?

    /// - Parameters:
    ///   - stderrFile: append stderr to this regular file instead of capturing it with stdout.
    init(_ executable: String, _ arguments: [String], stderrFile: String? = nil) throws {
        let (pid, output) = try ChildSpawner.spawn(executable, arguments, stderrFile: stderrFile)
        self.pid = pid
        self.output = OutputLog(reading: output)
    }

    /// Waits at most `seconds` for the child to end (polling with Task.sleep, never blocking a
    /// cooperative-pool thread); kills its group and returns nil if it did not.
    func wait(seconds: Double) async -> Termination? {
        if let ended { return ended }
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var status: Int32 = 0
            let rc = waitpid(pid, &status, WNOHANG)
            if rc == pid {
                ended = Termination(waitStatus: status)
                _ = await output.wait(seconds: 2) { _ in false }  // let the reader drain to EOF
                return ended
            }
            if rc < 0 && errno != EINTR { return nil }
            try? await Task.sleep(for: .milliseconds(5))
        }
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        ended = Termination(waitStatus: status)
        return nil
    }

    func signal(_ number: Int32) { kill(pid, number) }

    deinit {
        if ended == nil {
            kill(-pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }
}

/// A fresh empty directory, root-owned when the tests run as root, mode 0555: a chroot for the
/// broker. Removed by `remove()`.
struct ChrootDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/peerjs-sandbox-test.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp failed") }
        path = String(cString: made)
        chmod(path, 0o555)
    }

    func remove() { rmdir(path) }
}

/// `/proc/<pid>/status` as a dictionary of its fields.
func procStatus(_ pid: pid_t) -> [String: String] {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return [:] }
    var fields: [String: String] = [:]
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: ":", maxSplits: 1)
        if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
    }
    return fields
}

/// The first integer after `marker` in `text`.
func number(after marker: String, in text: String) -> Int? {
    guard let range = text.range(of: marker) else { return nil }
    return Int(text[range.upperBound...].prefix { $0.isNumber })
}
