import Foundation
import Glibc
import PeerJSTesting

// What only this target needs on top of PeerJSTesting: a throwaway chroot directory and
// readers of /proc status and of numbers in log lines.

/// A fresh empty directory, root-owned when the tests run as root, mode 0555: a chroot for the
/// broker. Removed by `remove()`.
struct ChrootDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/peerjs-sandbox-test.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp failed") }
        path = String(cString: made)
        chmod(path, 0o555)
    }

    func remove() { rmdir(path) }
}

/// `/proc/<pid>/status` as a dictionary of its fields.
func procStatus(_ pid: pid_t) -> [String: String] {
    guard let text = try? readProcFile("/proc/\(pid)/status") else { return [:] }
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

extension ChildProcess {
    /// Waits (bounded) until the output holds a line containing each of `markers`; returns the
    /// whole output then.
    func waitForLines(containing markers: [String], timeout: Duration = .seconds(30)) async throws -> String {
        for marker in markers { _ = try await waitForLine(timeout: timeout, "a line containing \(marker)") { $0.contains(marker) } }
        return output
    }
}
