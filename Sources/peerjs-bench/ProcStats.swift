import Glibc

/// Reads what the kernel says about the server's processes: resident memory and CPU time.
enum Proc {
    /// The whole file (files under /proc report size 0, so read until EOF).
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Direct children of `pid` (over all its threads).
    static func children(of pid: Int32) -> [Int32] {
        var result: [Int32] = []
        guard let dir = opendir("/proc/\(pid)/task") else { return [] }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard let tid = Int32(name) else { continue }
            let list = read("/proc/\(pid)/task/\(tid)/children") ?? ""
            result += list.split(separator: " ").compactMap { Int32($0.trimmingSpaces) }
        }
        return result
    }

    /// `pid` and all its descendants.
    static func tree(_ pid: Int32) -> [Int32] {
        var all = [pid]
        var index = 0
        while index < all.count {
            all += children(of: all[index]).filter { !all.contains($0) }
            index += 1
        }
        return all
    }

    static func commandLine(_ pid: Int32) -> [String] {
        (read("/proc/\(pid)/cmdline") ?? "").split(separator: "\0").map(String.init)
    }

    /// VmRSS and RssAnon in bytes.
    static func memory(_ pid: Int32) -> (rss: Int64, anon: Int64)? {
        guard let status = read("/proc/\(pid)/status") else { return nil }
        var rss: Int64 = 0, anon: Int64 = 0
        for line in status.split(separator: "\n") {
            if line.hasPrefix("VmRSS:") { rss = kib(line) }
            if line.hasPrefix("RssAnon:") { anon = kib(line) }
        }
        return (rss, anon)
    }

    private static func kib(_ line: Substring) -> Int64 {
        let digits = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0"
        return (Int64(digits.trimmingSpaces) ?? 0) * 1024
    }

    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// utime and stime in seconds.
    static func cpuTimes(_ pid: Int32) -> CPUTimes? {
        guard let stat = read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the comm field: state is field 3, utime 14, stime 15 → indexes 11 and 12 here.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return CPUTimes(user: user / ticksPerSecond, system: system / ticksPerSecond)
    }

    static func loadAverage() -> String {
        (read("/proc/loadavg") ?? "").split(separator: " ").prefix(3).joined(separator: " ")
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while let first = s.first, first == " " || first == "\t" || first == "\n" { s.removeFirst() }
        while let last = s.last, last == " " || last == "\t" || last == "\n" { s.removeLast() }
        return s
    }
}

/// One server process as the bench sees it.
struct ProcessSample: Codable, Sendable {
    var pid: Int32
    var role: String
    var rssBytes: Int64
    var anonBytes: Int64
    var cpuSeconds: Double
    /// The kernel's part of `cpuSeconds` (stime); absent in results written before session 4.
    var systemSeconds: Double?
}

/// The processes of the server under test: the given pid and its descendants, each named by
/// its role (`broker` for `--role broker`, the given one `main`, other children by program name).
struct ServerProcesses: Sendable {
    let root: Int32?

    func sample() -> [ProcessSample] {
        guard let root else { return [] }
        return Proc.tree(root).compactMap { pid in
            guard let memory = Proc.memory(pid), let cpu = Proc.cpuTimes(pid) else { return nil }
            let arguments = Proc.commandLine(pid)
            let role: String
            if pid == root {
                role = "main"
            } else if let index = arguments.firstIndex(of: "--role"), index + 1 < arguments.count {
                role = arguments[index + 1]
            } else {
                role = String((arguments.first ?? "child").split(separator: "/").last ?? "child")
            }
            return ProcessSample(pid: pid, role: role, rssBytes: memory.rss, anonBytes: memory.anon,
                                 cpuSeconds: cpu.total, systemSeconds: cpu.system)
        }
    }
}

extension [ProcessSample] {
    var totalCPU: Double { reduce(0) { $0 + $1.cpuSeconds } }
    var totalSystemCPU: Double { reduce(0) { $0 + ($1.systemSeconds ?? 0) } }
    var totalRSS: Int64 { reduce(0) { $0 + $1.rssBytes } }

    /// The process that holds the peers: the broker if there is one, else the main process.
    var primary: ProcessSample? { first { $0.role == "broker" } ?? first { $0.role == "main" } }
}

/// User and system CPU seconds, and the difference of two readings.
struct CPUTimes {
    var user = 0.0
    var system = 0.0
    var total: Double { user + system }

    static func - (later: CPUTimes, earlier: CPUTimes) -> CPUTimes {
        CPUTimes(user: later.user - earlier.user, system: later.system - earlier.system)
    }
}

/// Our own CPU time (the load generator must not be the bottleneck).
func selfCPUSeconds() -> Double { selfCPUTimes().total }

/// Our own user and system time.
func selfCPUTimes() -> CPUTimes {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return CPUTimes(user: Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6,
                    system: Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6)
}

/// Raises the soft descriptor limit to the hard one; returns the new soft limit.
func raiseDescriptorLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return Int(clamping: limit.rlim_cur)
}

/// Monotonic nanoseconds (CLOCK_MONOTONIC, like NIODeadline).
@inline(__always)
func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
