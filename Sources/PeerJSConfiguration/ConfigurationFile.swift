import Glibc

/// `/etc/peerjs/peerjs.conf`: `key = value` lines whose keys are the long command-line flags
/// (`port = 9000`, `allow_discovery = true`, `cors = https://a.example` once per origin).
/// Chosen over TOML because every value is a flag value: one syntax to learn, no nesting, and
/// the file turns into the same arguments the command line takes, so both are checked alike.
/// (A library of its own so that the fuzz target `fuzz-files` can reach it.)
public struct ConfigurationFile: Sendable {
    /// The file's settings as command-line arguments, in file order.
    public let arguments: [String]

    /// Keys that take a value, and keys that are switches (`true`/`false`).
    public static let valueKeys: Set<String> = [
        "port", "host", "key", "path", "expire_timeout", "alive_timeout", "concurrent_limit", "cors",
        "cleanup_out_msgs", "max_message_size", "handshake_timeout", "log_level", "user", "chroot",
        "sslkey", "sslcert", "sslkey_passphrase_file", "https_port", "https_host",
        "keys", "auth_users", "auth_program", "auth_timeout", "auth_user", "auth_program_user", "auth_jwt_key",
        "auth_jwt_audience", "auth_jwt_issuer",
        "ip_limit", "ip_handshake_limit", "handshake_limit", "output_limit", "max_header_size",
        "cluster", "cluster_password_file", "cluster_instance", "cluster_expiry", "cluster_user",
        "takeover_timeout", "metrics_port", "metrics_host",
    ]
    public static let switchKeys: Set<String> = ["allow_discovery", "proxied", "reuse_port"]

    /// A line that is not `key = value` with a known key, or a file that cannot be read; the
    /// message names the file and line.
    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func load(path: String) throws -> ConfigurationFile {
        try ConfigurationFile(text: readFile(path), name: path)
    }

    /// Parses `text`; `name` is used in error messages (`name:line: …`).
    public init(text: String, name: String) throws {
        var arguments: [String] = []
        // "\r\n" is one Character in Swift: splitting on "\n" alone would not split a CRLF file.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (index, rawLine) in lines.enumerated() {
            let place = "\(name):\(index + 1)"
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#"), hash == line.startIndex || line[line.index(before: hash)] == " " {
                line = line[..<hash]
            }
            let trimmed = Self.trim(line)
            if trimmed.isEmpty { continue }
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw Error(description: "\(place): expected `key = value`, found `\(trimmed)`")
            }
            let key = Self.trim(trimmed[..<equals]).replacingHyphens
            var value = Self.trim(trimmed[trimmed.index(after: equals)...])
            if value.count >= 2, value.first == "\"", value.last == "\"" { value = value.dropFirst().dropLast() }
            if Self.valueKeys.contains(key) {
                guard !value.isEmpty else { throw Error(description: "\(place): `\(key)` needs a value") }
                arguments += ["--" + (key == "log_level" ? "log-level" : key), String(value)]
            } else if Self.switchKeys.contains(key) {
                switch value.lowercased() {
                case "true", "yes", "on", "1": arguments.append("--" + key)
                case "false", "no", "off", "0": break
                // `proxied = 10.0.0.1, 10.0.0.2`: only these proxies are believed.
                case _ where key == "proxied" && !value.isEmpty: arguments.append("--proxied=" + value)
                default: throw Error(description: "\(place): `\(key)` takes true or false, not `\(value)`")
                }
            } else {
                throw Error(description: "\(place): unknown key `\(key)`; the keys are the long flags of peerjs --help")
            }
        }
        self.arguments = arguments
    }

    private static func trim(_ text: Substring) -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        return text.drop(while: isSpace).reversed().drop(while: isSpace).reversed().reduce(into: Substring()) { $0.append($1) }
    }

    private static func readFile(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw Error(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= 1 << 20 {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw Error(description: "cannot read \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { return String(decoding: bytes, as: UTF8.self) }
            bytes += chunk[0..<count]
        }
        throw Error(description: "\(path) is larger than 1 MiB; is it the right file?")
    }
}

extension Substring {
    fileprivate var replacingHyphens: String {
        String(map { $0 == "-" ? "_" : $0 })
    }
}
