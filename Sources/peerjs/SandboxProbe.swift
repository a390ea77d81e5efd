import Broker
import CShim
import Glibc
import IPC
import Logging
import Sandbox

/// The hidden `--role sandbox-probe` of the tests: starts the broker's event loop exactly as the
/// broker does, enters the same sandbox, then makes one system call (`--try NAME`) or runs the
/// `baseline` workload. Exit status: the errno of a refused-with-errno call, 200 when the call
/// ran, 0 for a good baseline; a killed call ends the process with SIGSYS.
enum SandboxProbe {
    static func run(attempt: String, logger: Logger, confine: () throws -> Void) -> Int32 {
        run(attempt: attempt, policy: "broker", logger: logger, confine: confine)
    }

    /// With `policy` `auth`, no event loop is started (the auth helper has none) and the
    /// baseline is the helper's workload: allocation, poll, sleeping, a read-only open.
    static func run(attempt: String, policy: String, logger: Logger, confine: () throws -> Void) -> Int32 {
        if policy == "auth" { return runAuth(attempt: attempt, logger: logger, confine: confine) }
        // The broker's threads exist before the filter, as in the broker role.
        let server: BrokerServer
        do {
            server = try BrokerServer(configuration: BrokerConfiguration(), logger: logger)
        } catch {
            logger.error("probe: cannot start the event loop: \(error)")
            return 70
        }
        if attempt == "baseline" {
            var fds: [Int32] = [-1, -1]
            guard let loopback = makeLoopbackPair(), socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
                logger.error("probe: cannot make a loopback TCP pair or a socketpair")
                return 71
            }
            do { try confine() } catch {
                logger.critical("probe: cannot enter the sandbox: \(error)")
                return 3
            }
            return baseline(server: server, client: loopback.client, served: loopback.served, pair: (fds[0], fds[1]), logger: logger)
        }
        if attempt == "lost-descriptor" { return lostDescriptor(logger: logger, confine: confine) }
        if attempt == "i386-syscall" || attempt == "x32-syscall" {
            // getpid through a foreign ABI: the filter's bad-architecture action must end the
            // whole process (the broker's event loop threads are running).
            do { try confine() } catch {
                logger.critical("probe: cannot enter the sandbox: \(error)")
                return 3
            }
            let result = cshim_foreign_abi_getpid(attempt == "i386-syscall" ? 0 : 1)
            if result == -2 { return 64 }  // not an x86_64 machine: nothing was tried
            if result < 0 { return min(errno, 199) }
            logger.error("probe: \(attempt) ran (returned \(result))")
            return 200
        }
        let call = PreparedCall(attempt)
        guard let call else {
            logger.error("probe: unknown system call \(attempt)")
            return 64
        }
        do { try confine() } catch {
            logger.critical("probe: cannot enter the sandbox: \(error)")
            return 3
        }
        errno = 0
        let result = cshim_syscall6(call.number, call.arguments[0], call.arguments[1], call.arguments[2],
                                    call.arguments[3], call.arguments[4], call.arguments[5])
        if result == 0 && call.createsProcess { _exit(0) }  // a forked child (the filter failed): leave quietly
        if result < 0 { return min(errno, 199) }
        logger.error("probe: \(attempt) ran (returned \(result))")
        return 200
    }

    /// A hand-off into a full descriptor table, inside the broker's sandbox: the soft
    /// RLIMIT_NOFILE (which the broker may set) is lowered to the descriptors in use, a
    /// `connection` frame with a descriptor is received, and it must arrive as one lost
    /// descriptor on a channel that still works (the next frame is read). Exit 0 when it does.
    static func lostDescriptor(logger: Logger, confine: () throws -> Void) -> Int32 {
        let pair: (HandoffChannel, HandoffChannel)
        do { pair = try HandoffChannel.pair(roles: (.supervisor, .broker)) } catch {
            logger.error("probe: \(error)")
            return 71
        }
        var open: rlim_t = 0
        for fd in 0..<4096 where fcntl(Int32(fd), F_GETFD) >= 0 { open = rlim_t(fd + 1) }
        do { try confine() } catch {
            logger.critical("probe: cannot enter the sandbox: \(error)")
            return 3
        }
        let handoff = ConnectionHandoff(peer: .none, tls: false)
        do {
            try pair.0.send(handoff, fd: 0)  // stdin stands in for a connection
            try pair.0.send(DrainRequest(deadlineMs: 1))
            var limit = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
            limit.rlim_cur = open  // every number below is taken: the next descriptor cannot be installed
            guard setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
                logger.error("probe: setrlimit(RLIMIT_NOFILE) refused: \(String(cString: strerror(errno)))")
                return 72
            }
            guard let first = try pair.1.receive(), first.type == .connection, first.fd == nil, first.descriptorLost else {
                logger.error("probe: the frame did not arrive as a lost descriptor")
                return 1
            }
            guard let second = try pair.1.receive(), second.type == .drain else {
                logger.error("probe: the channel did not carry the next frame")
                return 1
            }
            logger.info("probe: one descriptor lost, the channel works")
            return 0
        } catch {
            logger.error("probe: \(error)")
            return 1
        }
    }

    static func runAuth(attempt: String, logger: Logger, confine: () throws -> Void) -> Int32 {
        let readOnly = strdup("/etc/hostname")
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { return 71 }
        let call: PreparedCall?
        if attempt == "open-write" {
            // openat(AT_FDCWD, "/etc/hostname", O_WRONLY | O_CREAT): the filter's argument check.
            call = PreparedCall("openat").map {
                PreparedCall(number: $0.number, arguments: [Int(AT_FDCWD), Int(bitPattern: readOnly), Int(O_WRONLY | O_CREAT), 0o644, 0, 0])
            }
        } else if attempt == "baseline" {
            call = nil
        } else {
            guard let prepared = PreparedCall(attempt) else {
                logger.error("probe: unknown system call \(attempt)")
                return 64
            }
            call = prepared
        }
        do { try confine() } catch {
            logger.critical("probe: cannot enter the sandbox: \(error)")
            return 3
        }
        guard let call else {
            var blocks: [[UInt8]] = []
            for size in [16, 4096, 1 << 20, 8 << 20] { blocks.append([UInt8](repeating: 7, count: size)) }
            guard blocks.map(\.count).reduce(0, +) > 0 else { return 10 }
            // The helper is one thread: a poll loop over sockets made before the filter.
            var one: UInt8 = 1
            guard write(fds[1], &one, 1) == 1 else { return 11 }
            var entry = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 5000) == 1 else { return 12 }
            var byte: UInt8 = 0
            guard read(fds[0], &byte, 1) == 1, byte == 1 else { return 13 }
            var pause = timespec(tv_sec: 0, tv_nsec: 2_000_000)
            guard nanosleep(&pause, nil) == 0 else { return 15 }
            let file = open("/etc/hostname", O_RDONLY | O_CLOEXEC)
            guard file >= 0 else { return 14 }
            close(file)
            logger.info("probe: baseline passed")
            return 0
        }
        errno = 0
        let result = cshim_syscall6(call.number, call.arguments[0], call.arguments[1], call.arguments[2],
                                    call.arguments[3], call.arguments[4], call.arguments[5])
        if result == 0 && call.createsProcess { _exit(0) }
        if result < 0 { return min(errno, 199) }
        logger.error("probe: \(attempt) ran (returned \(result))")
        return 200
    }

    /// A system call with arguments that would really do its work if it were allowed, all
    /// allocated before the filter.
    struct PreparedCall {
        let number: Int
        let arguments: [Int]
        let createsProcess: Bool

        init(number: Int, arguments: [Int]) {
            self.number = number
            self.arguments = arguments
            createsProcess = false
        }

        init?(_ attempt: String) {
            // `call-form` tries `call` with the arguments of that form (mmap-exec, setsockopt-ulp, ...).
            let name = String(attempt.prefix { $0 != "-" })
            guard let number = SeccompFilter.number(of: name) else { return nil }
            self.number = Int(number)
            let file = Int(bitPattern: strdup("/etc/passwd"))
            let program = Int(bitPattern: strdup("/bin/true"))
            let argv = UnsafeMutablePointer<Int>.allocate(capacity: 2)
            argv[0] = program
            argv[1] = 0
            let buffer = Int(bitPattern: malloc(4096))
            let vector = Int(bitPattern: argv)
            let envp = Int(bitPattern: argv + 1)
            createsProcess = ["fork", "vfork", "clone"].contains(attempt)
            switch attempt {
            case "open", "stat", "lstat", "access", "readlink": arguments = [file, buffer, 0, 0, 0, 0]
            case "openat", "newfstatat", "faccessat", "faccessat2", "readlinkat": arguments = [Int(AT_FDCWD), file, buffer, 0, 0, 0]
            case "statx": arguments = [Int(AT_FDCWD), file, 0, 0x7ff, buffer, 0]
            case "fstat": arguments = [2, buffer, 0, 0, 0, 0]
            case "execve": arguments = [program, vector, envp, 0, 0, 0]
            case "execveat": arguments = [Int(AT_FDCWD), program, vector, envp, 0, 0]
            case "socket": arguments = [Int(AF_INET), Int(SOCK_STREAM.rawValue), 0, 0, 0, 0]
            case "socket-unix": arguments = [Int(AF_UNIX), Int(SOCK_STREAM.rawValue), 0, 0, 0, 0]
            case "socket-netlink": arguments = [Int(AF_NETLINK), Int(SOCK_RAW.rawValue), 0, 0, 0, 0]
            case "rt_sigaction-int": arguments = [Int(SIGINT), 0, 0, 8, 0, 0]
            case "socketpair": arguments = [Int(AF_UNIX), Int(SOCK_STREAM.rawValue), 0, buffer, 0, 0]
            case "clone": arguments = [Int(SIGCHLD), 0, 0, 0, 0, 0]  // fork-like: no CLONE_THREAD
            case "mmap-exec": arguments = [0, 4096, Int(PROT_READ | PROT_EXEC), Int(MAP_PRIVATE | MAP_ANONYMOUS), -1, 0]
            case "mprotect-exec":
                let page = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                arguments = [Int(bitPattern: page), 4096, Int(PROT_READ | PROT_EXEC), 0, 0, 0]
            case "chroot": arguments = [Int(bitPattern: strdup("/")), 0, 0, 0, 0, 0]
            case "setuid", "setgid": arguments = [0, 0, 0, 0, 0, 0]
            case "process_vm_readv", "process_vm_writev": arguments = [Int(getpid()), buffer, 0, buffer, 0, 0]
            case "setsockopt-ulp", "setsockopt-tls", "setsockopt-nodelay", "getsockopt-info", "getsockopt-error":
                // A connected TCP socket made before the filter, as the broker's connections are.
                let socket = Int(SandboxProbe.makeLoopbackPair()?.served ?? -1)
                let length = UnsafeMutablePointer<socklen_t>.allocate(capacity: 1)
                length.pointee = 4096
                let one = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
                one.pointee = 1
                let tcp = Int(IPPROTO_TCP)
                switch attempt {
                case "setsockopt-ulp": arguments = [socket, tcp, 31, Int(bitPattern: strdup("tls")), 3, 0]  // TCP_ULP "tls"
                case "setsockopt-tls": arguments = [socket, 282, 1, buffer, 40, 0]  // SOL_TLS, TLS_TX
                case "setsockopt-nodelay": arguments = [socket, tcp, 1, Int(bitPattern: one), 4, 0]  // TCP_NODELAY
                case "getsockopt-info": arguments = [socket, tcp, 11, buffer, Int(bitPattern: length), 0]  // TCP_INFO
                default: arguments = [socket, Int(SOL_SOCKET), Int(SO_ERROR), buffer, Int(bitPattern: length), 0]
                }
            case "prlimit64-other": arguments = [Int(getppid()), Int(RLIMIT_NOFILE.rawValue), 0, buffer, 0, 0]
            case "prlimit64-self": arguments = [0, Int(RLIMIT_NOFILE.rawValue), 0, buffer, 0, 0]
            default: arguments = [0, 0, 0, 0, 0, 0]
            }
        }
    }

    /// A connected TCP pair on 127.0.0.1, made before the filter (no socket calls after it).
    static func makeLoopbackPair() -> (client: Int32, served: Int32)? {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { return nil }
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(listener, raw, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, raw, &length) == 0
            }
        }
        guard bound else { return nil }
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard client >= 0 else { return nil }
        let connected = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) == 0 }
        }
        let served = connected ? accept(listener, nil, nil) : -1
        guard served >= 0 else {
            close(client)
            return nil
        }
        return (client, served)
    }

    /// Allocation, threads, timers, sleeping and socket I/O inside the sandbox; 0 when all worked.
    static func baseline(server: BrokerServer, client: Int32, served: Int32, pair: (Int32, Int32), logger: Logger) -> Int32 {
        // Allocation: small, large (mmap), growing (mremap).
        var blocks: [[UInt8]] = []
        for size in [16, 4096, 1 << 20, 8 << 20] { blocks.append([UInt8](repeating: 7, count: size)) }
        var grown: [Int] = []
        for i in 0..<200_000 { grown.append(i) }
        guard blocks.map(\.count).reduce(0, +) > 0, grown.count == 200_000 else { return 10 }
        blocks.removeAll()

        // Threads that sleep and write to a socketpair made before the filter; the main thread reads.
        for round in 0..<2 {
            var thread = pthread_t()
            let box = Unmanaged.passRetained(ThreadWork(fd: pair.1, round: round)).toOpaque()
            guard pthread_create(&thread, nil, { raw in
                let work = Unmanaged<ThreadWork>.fromOpaque(raw!).takeRetainedValue()
                usleep(2000)
                var byte = UInt8(work.round)
                _ = write(work.fd, &byte, 1)
                return nil
            }, box) == 0 else { return 11 }
            var byte: UInt8 = 0xff
            guard read(pair.0, &byte, 1) == 1, byte == UInt8(round) else { return 12 }
            guard pthread_join(thread, nil) == 0 else { return 13 }
        }
        close(pair.0)
        close(pair.1)

        // Timers and sleeping.
        var start = timespec()
        var end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        var pause = timespec(tv_sec: 0, tv_nsec: 5_000_000)
        guard nanosleep(&pause, nil) == 0 else { return 14 }
        clock_gettime(CLOCK_MONOTONIC, &end)
        guard (end.tv_sec - start.tv_sec) * 1_000_000_000 + (end.tv_nsec - start.tv_nsec) >= 5_000_000 else { return 15 }

        // NIO on an adopted socket: an HTTP request through the broker's own pipeline (epoll,
        // timers for the handshake timeout, reads and writes on the event-loop thread).
        server.adopt(descriptor: served, address: "127.0.0.1")
        let request = Array("GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ write(client, $0.baseAddress, $0.count) }) == request.count else { return 16 }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while response.count < 65536 {
            let n = buffer.withUnsafeMutableBytes { read(client, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 200") else {
            logger.error("probe: unexpected HTTP response: \(text.prefix(80))")
            return 17
        }
        close(client)
        logger.info("probe: baseline passed")
        return 0
    }

    final class ThreadWork {
        let fd: Int32
        let round: Int
        init(fd: Int32, round: Int) {
            self.fd = fd
            self.round = round
        }
    }
}
