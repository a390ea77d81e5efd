import Glibc

/// The client address behind a reverse proxy, from `X-Forwarded-For`. It exists because that
/// header is written by the client too: only the entries appended by proxies the broker trusts
/// can be believed, so the address is the rightmost entry that is not itself a trusted proxy,
/// and only when the connection comes from a trusted proxy (`--proxied`, `--proxied=ADDR,…`).
enum ForwardedFor {
    /// - Parameters:
    ///   - socketHost: the connecting peer's address (no port).
    ///   - forwardedFor: every `X-Forwarded-For` value, comma-joined in header order.
    ///   - isTrustedProxy: whether an address is a trusted proxy (with `--proxied` and no list,
    ///     every connecting peer is).
    ///   - trustedProxies: the configured list; entries in it are skipped from the right.
    /// - Returns: the client's address: a numeric IPv4 or IPv6 address (checked with inet_pton),
    ///   or `socketHost` when the connection is not from a trusted proxy, there is no header, or
    ///   the entry to believe is not a numeric address.
    static func client(
        socketHost: String, forwardedFor: String?, isTrustedProxy: (String) -> Bool, trustedProxies: [String]
    ) -> String {
        guard let forwardedFor, isTrustedProxy(socketHost) else { return socketHost }
        var entries = forwardedFor.split(separator: ",", omittingEmptySubsequences: false)
        var checked = 0
        while let last = entries.popLast(), checked < 64 {
            checked += 1
            guard let entry = canonical(String(last.filter { $0 != " " && $0 != "\t" })) else { return socketHost }
            if trustedProxies.contains(entry) { continue }  // a proxy in the chain
            return entry
        }
        return socketHost
    }

    /// `text` as inet_ntop writes it (so `0:0::1` and `::1` compare equal, and an IPv4-mapped
    /// IPv6 address reads as IPv4, as the supervisor reports socket addresses); nil when it is
    /// not a numeric IPv4 or IPv6 address.
    static func canonical(_ text: String) -> String? {
        address(text).map(Self.text)
    }

    /// The 4 (IPv4, also for an IPv4-mapped IPv6 address) or 16 bytes of a numeric address.
    static func address(_ text: String) -> [UInt8]? {
        guard !text.isEmpty, text.utf8.count <= 64 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, text, &bytes) == 1 { return Array(bytes.prefix(4)) }
        guard inet_pton(AF_INET6, text, &bytes) == 1 else { return nil }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF { return Array(bytes[12..<16]) }
        return bytes
    }

    /// The inet_ntop form of 4 or 16 address bytes.
    static func text(_ bytes: [UInt8]) -> String {
        var output = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        _ = inet_ntop(bytes.count == 4 ? AF_INET : AF_INET6, bytes, &output, socklen_t(output.count))
        return String(decoding: output.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
