import Glibc
import IPC
import Prometheus

/// The supervisor's own series (restarts of each role, each process's resident memory) and the
/// broker's last `metrics` text: what `GET /metrics` answers. The broker's text is passed on as
/// it came; the supervisor only checks it is UTF-8 of at most ``MetricsText/maxLength`` bytes.
struct SupervisorMetrics {
    let registry = PrometheusCollectorRegistry()
    /// The broker's exposition and resident memory, as last sent; cleared when it exits, so a
    /// scrape during a restart shows no dead broker's values.
    var brokerText = ""
    var brokerResidentBytes: UInt64 = 0

    mutating func brokerExited() {
        brokerText = ""
        brokerResidentBytes = 0
    }
    /// Children started per role: every start after the first is a restart.
    private var starts: [Role: Int] = [:]

    static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "peerjs", metricName: metric, unitName: unit, helpText: help)
    }

    mutating func started(_ role: Role) {
        starts[role, default: 0] += 1
        let counter = registry.makeCounter(
            descriptor: Self.name("restarts", "total", "Children started again after the first start, per role."),
            labels: [("role", role.rawValue)])
        if starts[role, default: 0] > 1 { counter.increment() }
    }

    /// The exposition: resident memory (the broker's as it reported it, the others' read now from
    /// /proc where it shows them), the restarts, then the broker's series.
    func render(processes: [(role: String, pid: pid_t)]) -> [UInt8] {
        let memory = Self.name("resident_memory", "bytes", "Resident memory of each process of the service (/proc/PID/statm).")
        for (role, pid) in processes {
            let bytes = role == Role.broker.rawValue ? (brokerResidentBytes > 0 ? Int(brokerResidentBytes) : nil) : Self.residentBytes(pid: pid)
            guard let bytes else { continue }
            registry.makeGauge(descriptor: memory, labels: [("process", role)]).set(Int64(bytes))
        }
        var buffer = registry.emitToBuffer()
        buffer += brokerText.utf8
        return buffer
    }

    /// The second field of /proc/PID/statm (resident pages) in bytes.
    static func residentBytes(pid: pid_t) -> Int? {
        let fd = open("/proc/\(pid)/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let count = read(fd, &buffer, buffer.count)
        guard count > 0 else { return nil }
        return MetricsText.residentBytes(statm: buffer.prefix(count)).map { Int($0) }
    }
}
