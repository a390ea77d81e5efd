import Glibc

/// The payload of `metrics`: the broker's series in the Prometheus text format, sent to the
/// supervisor every `metricsIntervalMs` when `--metrics-port` is set. The supervisor serves the
/// last one it got beside its own series, and never parses it; the broker keeps no listener.
/// - Parameters:
///   - text: the exposition (`# TYPE` lines and samples), at most ``maxLength`` bytes of UTF-8.
///   - residentBytes: the broker's resident memory (its own /proc/self/statm; the supervisor cannot
///     read the broker's /proc entry under `ProtectProc=invisible`); 0: unknown.
public struct MetricsText: IPCMessage {
    @inlinable public static var frameType: FrameType { .metrics }

    /// Room for every series with 17 realms (the key and 16 `--keys`) several times over.
    public static let maxLength = 60 * 1024

    public var text: String
    public var residentBytes: UInt64

    public init(text: String, residentBytes: UInt64 = 0) {
        self.text = text
        self.residentBytes = residentBytes
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        text = try r.readString(maxLength: Self.maxLength)
        residentBytes = try r.readUInt64()
        try r.finish()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter(reservingCapacity: 12 + text.utf8.count)
        w.writeString(text)
        w.writeUInt64(residentBytes)
        return w.bytes
    }
}

extension MetricsText {
    /// Resident memory in bytes from the text of a /proc/PID/statm (its second field, in pages);
    /// nil when the text is not one. The broker reads its own, the supervisor the other children's.
    public static func residentBytes(statm: ArraySlice<UInt8>) -> UInt64? {
        let fields = statm.split(separator: UInt8(ascii: " "))
        guard fields.count >= 2, let pages = UInt64(String(decoding: fields[1], as: UTF8.self)) else { return nil }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }
}
