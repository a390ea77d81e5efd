import Glibc
public import IPC

/// Turns `--cluster URL` and `--cluster-password-file` into the cluster role's settings, as the
/// supervisor: it resolves the database's host name and reads the password file, so the role,
/// chrooted and without files, gets numeric addresses and the password in its `clusterHello`.
public enum ClusterConfiguration {
    /// `postgres://USER@HOST[:PORT]/DATABASE` (or `postgresql://`), split.
    public struct Target: Equatable, Sendable {
        public var user: String
        public var host: String
        public var port: UInt16
        public var database: String
    }

    /// Parses the URL; the error says what a good one looks like.
    public static func parse(_ url: String) throws(SupervisorError) -> Target {
        let example = "postgres://USER@HOST[:PORT]/DATABASE, e.g. postgres://peerjs@127.0.0.1:5432/peerjs"
        var rest = Substring(url)
        guard let scheme = ["postgres://", "postgresql://"].first(where: { rest.hasPrefix($0) }) else {
            throw SupervisorError(.configuration, "--cluster must look like \(example), not \(url)")
        }
        rest = rest.dropFirst(scheme.count)
        guard let at = rest.firstIndex(of: "@") else {
            throw SupervisorError(.configuration, "--cluster names no user: \(example)")
        }
        let user = String(rest[..<at])
        guard !user.isEmpty, !user.contains(":") else {
            throw SupervisorError(.configuration, user.contains(":")
                ? "--cluster must not hold a password (it would show in `ps` and in logs); put it in --cluster-password-file"
                : "--cluster names no user: \(example)")
        }
        rest = rest[rest.index(after: at)...]
        guard let slash = rest.firstIndex(of: "/") else {
            throw SupervisorError(.configuration, "--cluster names no database: \(example)")
        }
        var authority = rest[..<slash]
        let database = String(rest[rest.index(after: slash)...])
        guard !database.isEmpty, !database.contains("?"), !database.contains("/") else {
            throw SupervisorError(.configuration, "--cluster: the database name must follow the host and stand alone (no options): \(example)")
        }
        var port: UInt16 = 5432
        let host: String
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw SupervisorError(.configuration, "--cluster: unclosed [ in the host") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            authority = authority[authority.index(after: close)...]
        } else if let colon = authority.firstIndex(of: ":") {
            host = String(authority[..<colon])
            authority = authority[colon...]
        } else {
            host = String(authority)
            authority = ""
        }
        if authority.hasPrefix(":") {
            guard let value = UInt16(authority.dropFirst()), value > 0 else {
                throw SupervisorError(.configuration, "--cluster: the port must be 1 to 65535")
            }
            port = value
        } else if !authority.isEmpty {
            throw SupervisorError(.configuration, "--cluster must look like \(example), not \(url)")
        }
        guard !host.isEmpty else { throw SupervisorError(.configuration, "--cluster names no host: \(example)") }
        for (what, name) in [("user", user), ("database", database)] where name.utf8.count > ClusterSettings.maxNameLength {
            throw SupervisorError(.configuration, "--cluster: the \(what) name is longer than \(ClusterSettings.maxNameLength) bytes")
        }
        return Target(user: user, host: host, port: port, database: database)
    }

    /// The cluster role's settings: the URL parsed, its host resolved to numeric addresses, the
    /// password read (first line), the instance named (given, or `HOSTNAME-XXXXXX`).
    public static func settings(
        url: String, passwordFile: String?, instance: String?, expirySeconds: UInt32, process: ChildSettings
    ) throws(SupervisorError) -> ClusterSettings {
        let target = try parse(url)
        let addresses = try resolve(target.host)
        let password = try passwordFile.map { (path) throws(SupervisorError) in try readPassword(path) } ?? ""
        let name = instance ?? defaultInstance()
        guard ClusterSettings.isValidInstance(name) else {
            throw SupervisorError(.configuration, "--cluster-instance must be 1 to \(ClusterSettings.maxInstanceLength) of A-Z a-z 0-9 _ . -, not \(name)")
        }
        return ClusterSettings(
            process: process, addresses: addresses, port: target.port, user: target.user, database: target.database,
            password: password, instance: name, expirySeconds: expirySeconds)
    }

    /// `HOSTNAME-XXXXXX`: the host's name (cut to fit, other characters as `_`) and 6 random
    /// hex digits, new at every start, so two instances on one host differ.
    static func defaultInstance() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let host = gethostname(&buffer, buffer.count) == 0
            ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "peerjs"
        let safe = String(host.unicodeScalars.prefix(30).map { scalar -> Character in
            ClusterSettings.isValidInstance(String(scalar)) ? Character(scalar) : "_"
        })
        let suffix = String(UInt32.random(in: 0..<(1 << 24)), radix: 16)
        return (safe.isEmpty ? "peerjs" : safe) + "-" + String(repeating: "0", count: 6 - suffix.count) + suffix
    }

    /// Every IPv4 and IPv6 address `host` resolves to, numeric.
    static func resolve(_ host: String) throws(SupervisorError) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &results)
        guard status == 0, let first = results else {
            throw SupervisorError(.resolve, "cannot resolve the --cluster host \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(first) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor, addresses.count < ClusterSettings.maxAddresses {
            cursor = info.pointee.ai_next
            var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            guard info.pointee.ai_family == AF_INET || info.pointee.ai_family == AF_INET6,
                getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0
            else { continue }
            let address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if !addresses.contains(address) { addresses.append(address) }
        }
        guard !addresses.isEmpty else { throw SupervisorError(.resolve, "the --cluster host \(host) has no IPv4 or IPv6 address") }
        return addresses
    }

    /// The first line of `path` (at most 1 KiB), without its line end.
    static func readPassword(_ path: String) throws(SupervisorError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else { throw SupervisorError(.configuration, "cannot read --cluster-password-file \(path): \(SupervisorError.errnoText())") }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: ClusterSettings.maxPasswordLength + 2)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw SupervisorError(.configuration, "cannot read --cluster-password-file \(path): \(SupervisorError.errnoText())") }
            if n == 0 { break }
            count += n
        }
        let line = bytes[..<count].prefix { $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") }
        guard line.count <= ClusterSettings.maxPasswordLength, let text = String(validating: line, as: UTF8.self) else {
            throw SupervisorError(.configuration, "--cluster-password-file \(path): the first line must be at most \(ClusterSettings.maxPasswordLength) bytes of UTF-8")
        }
        guard !text.isEmpty else { throw SupervisorError(.configuration, "--cluster-password-file \(path) is empty") }
        return text
    }
}
