import IPC
import Logging

/// Passes the PeerJS server's log records to the app's log handler with the message and every
/// metadata value escaped (``LogText``): they carry values clients chose (ids, addresses), and
/// one record must stay one line whatever handler the app uses — as in the daemon's journal.
struct EscapingLogHandler: LogHandler {
    var inner: any LogHandler

    /// `logger` with its handler wrapped (its label is kept).
    static func wrapping(_ logger: Logger) -> Logger {
        let inner = logger.handler
        return Logger(label: logger.label) { _ in EscapingLogHandler(inner: inner) }
    }

    var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        var event = event
        event.message = "\(LogText.escaped(event.message.description))"
        event.metadata = event.metadata.map { Self.escaped($0) }
        inner.log(event: event)
    }

    static func escaped(_ metadata: Logger.Metadata) -> Logger.Metadata {
        metadata.mapValues { .string(LogText.escaped($0.description)) }
    }
}
