import Foundation
import IPC
import Logging
import Testing

@testable import Supervisor

/// Log lines captured in memory, for the supervisor's TLS bookkeeping.
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(Logger.Level, String)] = []

    var lines: [(level: Logger.Level, text: String)] { lock.withLock { entries.map { ($0.0, $0.1) } } }

    func append(_ level: Logger.Level, _ text: String) { lock.withLock { entries.append((level, text)) } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { log.append(event.level, "\(event.message)") }
    }
}

/// Issue 16 item 7: what the supervisor believes is in force, answer by answer (the process
/// tests cover the missing answer and the failed hand-off against the real binary; a broker
/// that refuses material the supervisor checked cannot be provoked from outside).
@Suite("The supervisor's TLS generations (issue 16 item 7)")
struct TLSHandoffTests {
    @Test("taken → in force; refused → an error, the broker keeps the old one, and a restarted broker is sent the newest checked one (a broker cannot roll the key back); late → an error, and a late answer still counts; an answer nobody asked for is refused")
    func answers() async throws {
        let certs = try await CertificateDirectory.make()
        try await certs.makeLeaf("one")
        try await certs.makeLeaf("two")
        try await certs.makeLeaf("three")
        let capture = CapturedLog()
        let logger = capture.logger
        func load(_ name: String) throws -> TLSMaterial {
            try TLSMaterial.load(TLSFiles(keyPath: certs.file("\(name).key"), certificatePath: certs.file("\(name)-chain.pem")), logger: logger)
        }
        let one = try load("one")
        let two = try load("two")
        let three = try load("three")
        var state = TLSHandoff()

        state.offer(one)
        state.brokerStarted()
        let answered1 = state.answer(TLSAck(generation: 1, accepted: true), brokerPID: 42, logger: logger)
        #expect(!answered1, "an answer before anything was sent")
        state.sent(now: 0)
        #expect(state.answerDue == TLSHandoff.answerDeadlineMs)
        let answered2 = state.answer(TLSAck(generation: 1, accepted: true), brokerPID: 42, logger: logger)
        #expect(answered2)
        #expect(state.inForce == 1 && state.answerDue == nil)
        #expect(capture.lines.last?.level == .info && capture.lines.last?.text.contains("broker pid=42 took TLS generation 1") == true)
        let answered3 = state.answer(TLSAck(generation: 1, accepted: true), brokerPID: 42, logger: logger)
        #expect(!answered3, "a second answer to one generation")
        let answered4 = state.answer(TLSAck(generation: 7, accepted: true), brokerPID: 42, logger: logger)
        #expect(!answered4, "an answer to a generation never sent")

        // Refused: the broker keeps serving generation 1, but the supervisor does not go back to
        // it: generation 2 (checked by the supervisor) is what a restarted broker gets.
        state.offer(two)
        #expect(one.privateKeyDER.count == 0, "the replaced key was not wiped: the supervisor holds one key")
        state.sent(now: 10)
        let answered5 = state.answer(TLSAck.refused(generation: 2, reason: "cannot parse the key"), brokerPID: 42, logger: logger)
        #expect(answered5)
        let refusal = try #require(capture.lines.last)
        #expect(refusal.level == .error)
        #expect(refusal.text.contains("refused TLS generation 2: cannot parse the key") && refusal.text.contains("keeps serving generation 1")
                && refusal.text.contains("a restarted broker is sent generation 2"), "\(refusal.text)")
        #expect(state.inForce == 1 && state.currentGeneration == 2 && state.current === two)
        #expect(two.privateKeyDER.count > 0, "the newest checked key was wiped")

        // Late: an error once, the old one still believed; the late answer then counts.
        state.offer(three)
        state.sent(now: 100)
        let before = capture.lines.count
        state.checkDeadline(now: 100 + TLSHandoff.answerDeadlineMs - 1, logger: logger)
        #expect(capture.lines.count == before, "an error before the deadline")
        state.checkDeadline(now: 100 + TLSHandoff.answerDeadlineMs, logger: logger)
        let late = try #require(capture.lines.last)
        #expect(late.level == .error && late.text.contains("has not answered TLS generation 3") && late.text.contains("generation 1 stays in force"), "\(late.text)")
        #expect(state.inForce == 1)
        let answered6 = state.answer(TLSAck(generation: 2, accepted: true), brokerPID: 42, logger: logger)
        #expect(!answered6, "generation 2 was answered already")
        let answered7 = state.answer(TLSAck(generation: 3, accepted: true), brokerPID: 42, logger: logger)
        #expect(answered7)
        #expect(state.inForce == 3 && state.current === three)
        #expect(capture.lines.last?.level == .notice && capture.lines.last?.text.contains("took TLS generation 3") == true)

        // A hand-off that failed half-way: the broker did not take it; the newest stays current.
        let four = try load("two")
        state.offer(four)
        state.sendFailed(IPCError(.wouldBlock, "channel is full"), logger: logger)
        let failed = try #require(capture.lines.last)
        #expect(failed.level == .error && failed.text.contains("could not hand TLS generation 4") && failed.text.contains("generation 3 stays in force"), "\(failed.text)")
        #expect(state.current === four && state.currentGeneration == 4 && state.inForce == 3)
        let answered8 = state.answer(TLSAck(generation: 4, accepted: true), brokerPID: 42, logger: logger)
        #expect(!answered8, "generation 4 never reached the broker whole")

        // A new broker: nothing in force, nothing awaited from it.
        state.brokerStarted()
        #expect(state.inForce == nil && state.awaited.isEmpty)
        state.sent(now: 200)
        let answered9 = state.answer(TLSAck(generation: 4, accepted: true), brokerPID: 43, logger: logger)
        #expect(answered9)
        #expect(state.inForce == 4)
    }
}
