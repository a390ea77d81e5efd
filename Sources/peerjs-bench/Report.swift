import ArgumentParser
import Foundation

/// `report`: reads the JSON results of several runs and prints a Markdown table of medians
/// (with the range), one column per server, and ratios of ours to each other server.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarize --json results: medians per server and scenario, and ratios to ours.")

    @Option(help: "The label of our server (the ratios are ours ÷ each other).")
    var ours = "peerjs"

    @Argument(help: "JSON result files (one run each).")
    var files: [String]

    func run() throws {
        let decoder = JSONDecoder()
        var results: [RunResult] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            guard let text = String(data: data, encoding: .utf8)?.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
                  let result = try? decoder.decode(RunResult.self, from: Data(text.utf8)) else {
                print("<!-- skipped \(file): no result -->")
                continue
            }
            results.append(result)
        }
        var labels: [String] = []
        for r in results where !labels.contains(r.label) { labels.append(r.label) }
        labels.sort { ($0 == ours ? 0 : 1, $0) < ($1 == ours ? 0 : 1, $1) }
        let others = labels.filter { $0 != ours }

        var header = "| scenario | metric |"
        var rule = "|---|---|"
        for label in labels { header += " \(label) |"; rule += "---:|" }
        for other in others { header += " \(ours) ÷ \(other) |"; rule += "---:|" }
        print(header)
        print(rule)
        var scenarios: [String] = []
        for r in results where !scenarios.contains(r.scenario) { scenarios.append(r.scenario) }
        for scenario in scenarios {
        let base = String(scenario.split(separator: "@").first ?? "")
        for metric in Self.metrics where metric.scenario == base {
            let runs = Dictionary(grouping: results.filter { $0.scenario == scenario }, by: \.label)
            guard !runs.isEmpty else { continue }
            let values = labels.map { label in (runs[label] ?? []).compactMap(metric.value) }
            guard values.contains(where: { !$0.isEmpty }) else { continue }
            var line = "| \(scenario) | \(metric.name) |"
            for v in values { line += " \(cell(v, metric.decimals)) |" }
            if let mine = median(values[0]), labels.first == ours {
                for (index, _) in others.enumerated() {
                    if let theirs = median(values[index + 1]), theirs != 0 {
                        line += " \(fmt(mine / theirs, 2))× |"
                    } else {
                        line += " – |"
                    }
                }
            } else {
                line += String(repeating: " – |", count: others.count)
            }
            print(line)
        }
        }
        print("")
        print("Runs (in order): " + results.map { r in
            "\(r.scenario)/\(r.label) \(r.startedAt.dropFirst(11).dropLast()) load \(r.loadAverageBefore.split(separator: " ").first ?? "?")\(r.timedOut ? " TIMED OUT" : "")"
        }.joined(separator: "; "))
    }

    private func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    private func cell(_ values: [Double], _ decimals: Int) -> String {
        guard let m = median(values) else { return "–" }
        let text = number(m, decimals)
        guard values.count > 1, let low = values.min(), let high = values.max(), low != high else { return text }
        return "\(text) (\(number(low, decimals))–\(number(high, decimals)))"
    }

    private func number(_ value: Double, _ decimals: Int) -> String {
        if decimals == 0 {
            let rounded = Int(value.rounded())
            let digits = String(abs(rounded))
            var grouped = ""
            for (i, c) in digits.enumerated() {
                if i > 0 && (digits.count - i) % 3 == 0 { grouped.append(",") }
                grouped.append(c)
            }
            return (rounded < 0 ? "-" : "") + grouped
        }
        return fmt(value, decimals)
    }

    struct Metric: Sendable {
        var scenario: String
        var name: String
        var decimals: Int
        var value: @Sendable (RunResult) -> Double?
    }

    static let metrics: [Metric] = [
        Metric(scenario: "connect", name: "connections/s", decimals: 0) { $0.connectionsPerSecond },
        Metric(scenario: "connect", name: "time to OPEN p50 (ms)", decimals: 2) { $0.openLatency?.p50 },
        Metric(scenario: "connect", name: "time to OPEN p99 (ms)", decimals: 2) { $0.openLatency?.p99 },
        Metric(scenario: "connect", name: "failures", decimals: 0) { Double($0.failures.values.reduce(0, +)) },
        Metric(scenario: "connect", name: "server RSS per held peer (B)", decimals: 0) { $0.rssPerPeerBytes },
        Metric(scenario: "connect", name: "server CPU per connection (µs)", decimals: 0) { $0.serverCPUMicrosPerConnection },
        Metric(scenario: "connect", name: "bench client CPU per connection (µs)", decimals: 0) { $0.clientCPUMicrosPerConnection },
        Metric(scenario: "connect", name: "of which system, server + client (µs)", decimals: 0) {
            guard let server = $0.serverSystemMicrosPerConnection, let client = $0.clientSystemMicrosPerConnection else { return nil }
            return server + client
        },
        Metric(scenario: "relay", name: "forwarded messages/s", decimals: 0) { $0.messagesPerSecond },
        Metric(scenario: "relay", name: "one-way p50 (ms)", decimals: 3) { $0.latency?.p50 },
        Metric(scenario: "relay", name: "one-way p99 (ms)", decimals: 3) { $0.latency?.p99 },
        Metric(scenario: "relay", name: "one-way p99.9 (ms)", decimals: 3) { $0.latency?.p999 },
        Metric(scenario: "relay", name: "errors + failures", decimals: 0) {
            Double(($0.errors ?? [:]).values.reduce(0, +) + $0.failures.values.reduce(0, +))
        },
        Metric(scenario: "relay", name: "server CPU s per million messages", decimals: 2) { $0.serverCPUSecondsPerMillion },
        Metric(scenario: "relay", name: "server CPU (cores)", decimals: 2) { $0.serverCPUShare },
        Metric(scenario: "relay", name: "bench client CPU (cores)", decimals: 2) { $0.clientCPUShare },
        Metric(scenario: "relay-paced", name: "offered rate (messages/s)", decimals: 0) { Double($0.parameters["rate"] ?? "") },
        Metric(scenario: "relay-paced", name: "forwarded messages/s", decimals: 0) { $0.messagesPerSecond },
        Metric(scenario: "relay-paced", name: "one-way p50 (ms)", decimals: 3) { $0.latency?.p50 },
        Metric(scenario: "relay-paced", name: "one-way p99 (ms)", decimals: 3) { $0.latency?.p99 },
        Metric(scenario: "relay-paced", name: "one-way p99.9 (ms)", decimals: 3) { $0.latency?.p999 },
        Metric(scenario: "relay-paced", name: "server CPU (cores)", decimals: 2) { $0.serverCPUShare },
        Metric(scenario: "churn", name: "sessions/s", decimals: 0) { $0.sessionsPerSecond },
        Metric(scenario: "churn", name: "session p99 (ms)", decimals: 2) { $0.sessionLatency?.p99 },
        Metric(scenario: "churn", name: "failures", decimals: 0) { Double($0.failures.values.reduce(0, +)) },
        Metric(scenario: "churn", name: "server RSS growth per session (B)", decimals: 1) { $0.rssGrowthPerSessionBytes },
        Metric(scenario: "churn", name: "server RSS growth (%)", decimals: 2) { $0.rssGrowthPercent },
        Metric(scenario: "churn", name: "server CPU per session (µs)", decimals: 0) {
            guard let cpu = $0.serverCPUSeconds, let n = $0.sessions, n > 0 else { return nil }
            return cpu / Double(n) * 1e6
        },
        Metric(scenario: "churn", name: "bench client CPU per session (µs)", decimals: 0) { $0.clientCPUMicrosPerSession },
        Metric(scenario: "churn", name: "of which system, server + client (µs)", decimals: 0) {
            guard let server = $0.serverSystemCPUSeconds, let client = $0.clientSystemMicrosPerSession,
                  let n = $0.sessions, n > 0 else { return nil }
            return server / Double(n) * 1e6 + client
        },
    ]
}
