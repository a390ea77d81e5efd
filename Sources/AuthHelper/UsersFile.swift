import Glibc

/// A policy file could not be read or parsed; the message names the file and line.
public struct AuthError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// The users file (`--auth-users`): lines of `id token [key ...]`, `#` comments and blank lines
/// allowed. The id must exist and the token match; where keys are listed, the peer may use only
/// those keys (rooms).
/// - Parameters:
///   - users: the entries by id.
public struct UsersFile: Sendable, Equatable {
    /// One line of the file.
    public struct Entry: Sendable, Equatable {
        public var token: [UInt8]
        public var keys: Set<String>
    }

    public private(set) var users: [String: Entry]

    /// Parses `text`; `name` is used in error messages (`name:line: …`).
    public init(text: String, name: String) throws(AuthError) {
        users = [:]
        // Cut at Unicode scalars, not Characters: "\r\n", or a space before a combining mark, is
        // one Character, and splitting by Character would not see the separator in it.
        let lines = text.unicodeScalars.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" })
        for (index, rawLine) in lines.enumerated() {
            var line = rawLine
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(Substring.init)
            if fields.isEmpty { continue }
            let place = "\(name):\(index + 1)"
            guard fields.count >= 2 else {
                throw AuthError("\(place): expected `id token [key ...]`, found only `\(fields[0])`")
            }
            let id = String(fields[0])
            guard users[id] == nil else {
                throw AuthError("\(place): the id `\(id)` is listed twice")
            }
            users[id] = Entry(token: Array(fields[1].utf8), keys: Set(fields.dropFirst(2).map(String.init)))
        }
    }

    /// Reads and parses the file at `path` (at most 4 MiB).
    public static func load(path: String) throws(AuthError) -> UsersFile {
        try UsersFile(text: try readFile(path), name: path)
    }

    /// Whether `a` equals `b`, in time that depends only on their lengths, not on where they
    /// differ (a token is a secret).
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        if a.count != b.count { difference |= 1 }
        let length = max(a.count, b.count)
        for index in 0..<length {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= x ^ y
        }
        return difference == 0
    }

    /// The text of a policy file (at most 4 MiB, UTF-8), for the other policies' key files.
    public static func readText(_ path: String) throws(AuthError) -> String {
        try readFile(path)
    }

    static func readFile(_ path: String, limit: Int = 4 << 20) throws(AuthError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw AuthError("cannot read \(path): \(String(cString: strerror(errno))); it must be readable by the auth helper's user")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 8192)
        while bytes.count <= limit {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw AuthError("cannot read \(path): \(String(cString: strerror(errno)))") }
            if count == 0 {
                guard let text = String(validating: bytes, as: UTF8.self) else {
                    throw AuthError("\(path) is not valid UTF-8")
                }
                return text
            }
            bytes += chunk[0..<count]
        }
        throw AuthError("\(path) is larger than \(limit) bytes; is it the right file?")
    }
}
