import Glibc
import Synchronization
import IPC
import Logging

/// Writes one line per log record to stderr with write(2) — no stdio buffer, nothing opened,
/// safe inside the sandbox. Under systemd (JOURNAL_STREAM set) each line starts with the
/// `<N>` syslog priority journald understands; on a terminal it reads `peerjs[role] level: …`.
/// The message and every metadata key and value go through ``LogText/escaped(_:)`` (control
/// characters, U+2028 and U+2029 become `\n`, `\xHH`, `\u{2028}`, …), so a value a client or a
/// policy program chose can never end the record or start a forged one: one record, one line.
struct JournalLogHandler: LogHandler {
    let label: String
    let journald: Bool
    var metadata: Logger.Metadata = [:]

    /// The process's default level: a child learns its level from its `hello`, after its loggers
    /// exist, and every logger without a level of its own follows (before the hello a child logs
    /// at the level of `--log-level`'s default, info).
    private static let level = Atomic<UInt8>(UInt8(Logger.Level.allCases.firstIndex(of: .info)!))
    /// A level set on one logger (swift-log's contract: it changes that logger only).
    private var ownLevel: Logger.Level?

    var logLevel: Logger.Level {
        get { ownLevel ?? Logger.Level.allCases[Int(Self.level.load(ordering: .relaxed))] }
        set { ownLevel = newValue }
    }

    init(label: String, journald: Bool) {
        self.label = label
        self.journald = journald
    }

    /// Sets the process's level from a level name (an unknown name leaves it as it is).
    static func setLevel(_ name: String) {
        guard let level = Logger.Level(rawValue: name) else { return }
        Self.level.store(UInt8(Logger.Level.allCases.firstIndex(of: level)!), ordering: .relaxed)
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = journald ? "<\(Self.priority(event.level))>\(label): " : "\(label) \(event.level): "
        line += LogText.escaped("\(event.message)")
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " " + LogText.escaped(key) + "=" + LogText.escaped("\(value)")
        }
        line += "\n"
        var bytes = Array(line.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
            if written <= 0 { break }
            offset += written
        }
        bytes.removeAll()
    }

    /// syslog priorities: error 3, warning 4, notice 5, info 6, debug 7.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .critical: 2
        case .error: 3
        case .warning: 4
        case .notice: 5
        case .info: 6
        case .debug, .trace: 7
        }
    }
}
