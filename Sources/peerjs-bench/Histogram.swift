/// A log-linear latency histogram of nanosecond values: exact below 128 ns, then 64 buckets per
/// power of two (every recorded value is off by at most 1/64, about 1.6 %). Fixed size, no
/// allocation when recording.
struct Histogram {
    private static let linear = 128
    private static let perOctave = 64
    private static let bucketCount = linear + 57 * perOctave

    private var counts = [UInt64](repeating: 0, count: Histogram.bucketCount)
    private(set) var count: UInt64 = 0
    private(set) var max: UInt64 = 0
    private(set) var min: UInt64 = .max
    private var sum: Double = 0

    private static func index(of value: UInt64) -> Int {
        if value < UInt64(linear) { return Int(value) }
        let msb = 63 - value.leadingZeroBitCount
        let shift = msb - 6
        let top = Int(value >> UInt64(shift))  // 64...127
        return linear + (shift - 1) * perOctave + (top - perOctave)
    }

    /// The midpoint of the values that land in bucket `index`.
    private static func value(at index: Int) -> UInt64 {
        if index < linear { return UInt64(index) }
        let shift = (index - linear) / perOctave + 1
        let top = UInt64((index - linear) % perOctave + perOctave)
        return (top << UInt64(shift)) + (UInt64(1) << UInt64(shift)) / 2
    }

    mutating func record(_ nanoseconds: UInt64) {
        counts[Self.index(of: nanoseconds)] &+= 1
        count += 1
        sum += Double(nanoseconds)
        if nanoseconds > max { max = nanoseconds }
        if nanoseconds < min { min = nanoseconds }
    }

    mutating func reset() {
        self = Histogram()
    }

    var mean: Double { count == 0 ? 0 : sum / Double(count) }

    /// The value at quantile `q` (0...1), in nanoseconds; 0 when empty.
    func quantile(_ q: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = Swift.max(1, UInt64((q * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= rank { return Swift.min(Self.value(at: index), max) }
        }
        return max
    }

    /// Quantiles in milliseconds, for reports.
    func summary() -> LatencySummary {
        LatencySummary(
            count: count,
            p50: Double(quantile(0.50)) / 1e6, p90: Double(quantile(0.90)) / 1e6,
            p99: Double(quantile(0.99)) / 1e6, p999: Double(quantile(0.999)) / 1e6,
            max: count == 0 ? 0 : Double(max) / 1e6, mean: mean / 1e6)
    }
}

struct LatencySummary: Codable, Sendable {
    var count: UInt64
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    var text: String {
        "p50 \(fmt(p50)) ms, p90 \(fmt(p90)) ms, p99 \(fmt(p99)) ms, p99.9 \(fmt(p999)) ms, max \(fmt(max)) ms (n=\(count))"
    }
}

func fmt(_ value: Double, _ decimals: Int = 3) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = "\(rounded)"
    if text.hasSuffix(".0") && decimals == 0 { text.removeLast(2) }
    return text
}
