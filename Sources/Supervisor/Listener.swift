import Glibc

/// A listening TCP socket the supervisor accepts on; its name (`http`, `https`) and whether the
/// broker must run TLS on it travel with every connection it hands to the broker.
struct Listener {
    let descriptor: Int32
    let name: String
    let address: String
    let port: UInt16
    let tls: Bool

    /// The systemd `FileDescriptorName=` that marks a socket-activated listener as TLS.
    static let tlsName = "https"

    /// Binds `port` on `host` (every address it resolves to), or on all addresses, IPv6 and
    /// IPv4 together, when `host` is nil. Sockets are close-on-exec and non-blocking.
    ///
    /// `reusePort`: SO_REUSEPORT, so that several instances (each its own supervisor, all the
    /// same user) bind the same port and the kernel spreads connections between them.
    static func bind(
        host: String?, port: UInt16, tls: Bool = false, reusePort: Bool = false, backlog: Int32 = 4096, name: String? = nil
    ) throws(SupervisorError) -> [Listener] {
        guard let host else {
            if let dual = try? open(family: AF_INET6, address: "::", port: port, tls: tls, reusePort: reusePort, backlog: backlog, dualStack: true, name: name) {
                return [dual]
            }
            return [try open(family: AF_INET, address: "0.0.0.0", port: port, tls: tls, reusePort: reusePort, backlog: backlog, dualStack: false, name: name)]
        }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &results)
        guard status == 0, let first = results else {
            throw SupervisorError(.resolve, "cannot resolve --host \(host): \(String(cString: gai_strerror(status))); give an IP address or a name in /etc/hosts")
        }
        defer { freeaddrinfo(first) }
        var listeners: [Listener] = []
        var seen = Set<String>()
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            cursor = info.pointee.ai_next
            let family = info.pointee.ai_family
            guard family == AF_INET || family == AF_INET6, let text = numericHost(info.pointee.ai_addr, info.pointee.ai_addrlen),
                seen.insert(text).inserted
            else { continue }
            listeners.append(try open(family: family, address: text, port: port, tls: tls, reusePort: reusePort, backlog: backlog, dualStack: false, name: name))
        }
        guard !listeners.isEmpty else {
            throw SupervisorError(.resolve, "--host \(host) resolved to no IPv4 or IPv6 address")
        }
        return listeners
    }

    private static func open(
        family: Int32, address: String, port: UInt16, tls: Bool, reusePort: Bool, backlog: Int32, dualStack: Bool, name: String?
    ) throws(SupervisorError) -> Listener {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SupervisorError(.bind, "socket() for \(address) failed: \(SupervisorError.errnoText())") }
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        if reusePort, setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            let why = SupervisorError.errnoText()
            close(fd)
            throw SupervisorError(.bind, "SO_REUSEPORT on \(address) failed: \(why)")
        }
        if family == AF_INET6 {
            var v6only: Int32 = dualStack ? 0 : 1
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &v6only, socklen_t(MemoryLayout<Int32>.size))
        }
        var storage = sockaddr_storage()
        let length: socklen_t
        if family == AF_INET6 {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            inet_pton(AF_INET6, address, &sin6.sin6_addr)
            withUnsafeBytes(of: sin6) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            inet_pton(AF_INET, address, &sin.sin_addr)
            withUnsafeBytes(of: sin) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, backlog) == 0 else {
            let text = SupervisorError.errnoText()
            close(fd)
            throw SupervisorError(.bind, "cannot listen on \(address) port \(port): \(text); choose another --port or --host, or stop what holds it")
        }
        return Listener(descriptor: fd, name: name ?? (tls ? tlsName : "http"), address: address, port: localPort(fd) ?? port, tls: tls)
    }

    /// A listening socket someone else made (systemd socket activation); TLS when it is named
    /// `https`.
    static func adopt(descriptor: Int32, name: String) -> Listener {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        let address = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { numericHost($0, length) }
        }
        return Listener(descriptor: descriptor, name: name, address: address ?? "?", port: localPort(descriptor) ?? 0, tls: name == tlsName)
    }

    private static func localPort(_ fd: Int32) -> UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard ok == 0 else { return nil }
        return withUnsafeBytes(of: storage) { raw in
            // sin_port and sin6_port sit at the same offset, right after the family.
            UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
        }
    }

    private static func numericHost(_ address: UnsafeMutablePointer<sockaddr>?, _ length: socklen_t) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(address, length, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 else { return nil }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
