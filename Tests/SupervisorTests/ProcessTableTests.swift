import IPC
import Testing

@testable import Supervisor

/// The process table's descriptor numbers, which both the supervisor (when it spawns) and the
/// child (when it adopts its channels) read.
@Suite("Process table")
struct ProcessTableTests {
    @Test("the broker finds the supervisor at fd 3; the helper finds the broker at 3 (handed to the broker in authChannel) and the supervisor at 4")
    func descriptors() {
        #expect(ProcessTable.descriptor(of: .broker, to: .supervisor) == 3)
        #expect(ProcessTable.descriptor(of: .auth, to: .broker) == 3)
        #expect(ProcessTable.descriptor(of: .auth, to: .supervisor) == 4)
        #expect(ProcessTable.descriptor(of: .broker, to: .auth) == -1, "the broker gets its helper channel in a frame, not at start")
        #expect(ProcessTable.channels(of: .auth).map(\.introducedBy) == [.authChannel, nil])
    }

    @Test("every role's descriptors are distinct and at least 3 (0–2 are stdin, stdout, stderr)")
    func descriptorsDistinct() {
        for role in Role.allCases {
            let numbers = ProcessTable.channels(of: role).map(\.descriptor)
            #expect(Set(numbers).count == numbers.count, "\(role): \(numbers)")
            #expect(numbers.allSatisfy { $0 >= 3 }, "\(role): \(numbers)")
        }
    }
}
