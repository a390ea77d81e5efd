import IPC
import Testing

/// Every ordered pair of roles: the channel ends a gate can guard.
private let allEnds: [ChannelRoles] = Role.allCases.flatMap { local in
    Role.allCases.filter { $0 != local }.map { ChannelRoles(local: local, remote: $0) }
}

/// The frame types that may arrive at `end`.
private func incoming(_ end: ChannelRoles) -> [FrameType] {
    FrameType.allCases.filter { $0.sender == end.remote && $0.receiver == end.local }
}

/// A gate for `end` that has been told of one question of every kind it can send, so answers
/// do not get in the way of the phase checks.
private func gateAskedEverything(_ end: ChannelRoles) -> FrameGate {
    var gate = FrameGate(local: end.local, remote: end.remote)
    for question in FrameType.allCases where question.sender == end.local && question.receiver == end.remote {
        gate.asked(question)
    }
    return gate
}

@Suite("FrameGate: one receiver's phase of one channel")
struct FrameGateTests {
    @Test("before the opening frame, every after-opening frame is refused, on every channel end")
    func nothingBeforeOpening() {
        for end in allEnds {
            for type in incoming(end) where type.phase == .afterOpening {
                var gate = gateAskedEverything(end)
                #expect(errorCode { () throws(IPCError) in try gate.accept(type) } == .outOfPhase, "\(type.name) at \(end.local)")
                #expect(!gate.isOpen)
            }
        }
    }

    @Test("the opening frame comes once: a second one is refused, on every channel end")
    func openingOnce() throws {
        for end in allEnds {
            for type in incoming(end) where type.phase == .opening {
                var gate = gateAskedEverything(end)
                try gate.accept(type)
                #expect(gate.isOpen)
                #expect(errorCode { () throws(IPCError) in try gate.accept(type) } == .outOfPhase, "second \(type.name)")
            }
        }
    }

    @Test("after the opening frame every frame of the direction is taken; any-time frames are taken before it too")
    func inPhase() throws {
        for end in allEnds {
            var gate = gateAskedEverything(end)
            for type in incoming(end) where type.phase == .anyTime {
                try gate.accept(type)
            }
            #expect(!gate.isOpen)
            for type in incoming(end) where type.phase == .opening { try gate.accept(type) }
            for type in incoming(end) where type.phase == .afterOpening { try gate.accept(type) }
        }
    }

    @Test("a frame the other way, or between other roles, is refused on every channel end")
    func wrongDirection() {
        for end in allEnds {
            for type in FrameType.allCases where type.sender != end.remote || type.receiver != end.local {
                var gate = gateAskedEverything(end)
                #expect(errorCode { () throws(IPCError) in try gate.accept(type) } == .wrongDirection, "\(type.name) at \(end.local) from \(end.remote)")
            }
        }
    }

    @Test("an answer is taken once per question sent; one with no question outstanding is refused")
    func answers() throws {
        for question in FrameType.allCases {
            guard let answer = question.answer else { continue }
            var gate = FrameGate(local: question.sender, remote: question.receiver)
            if answer.phase == .afterOpening, let opening = incoming(gate.roles).first(where: { $0.phase == .opening }) {
                gate.asked(opening.question ?? opening)
                try gate.accept(opening)
            }
            #expect(errorCode { () throws(IPCError) in try gate.accept(answer) } == .unsolicitedAnswer, "\(answer.name) before \(question.name)")
            gate.asked(question)
            gate.asked(question)
            try gate.accept(answer)
            if answer.phase != .opening {
                try gate.accept(answer)
                #expect(errorCode { () throws(IPCError) in try gate.accept(answer) } == .unsolicitedAnswer, "a third \(answer.name)")
            }
        }
    }

    @Test("the broker's gate: setup frames, then hello, then the rest; never a second hello")
    func brokerSequence() throws {
        var gate = FrameGate(local: .broker, remote: .supervisor)
        for refused: FrameType in [.connection, .reload, .drain] {
            #expect(errorCode { () throws(IPCError) in try gate.accept(refused) } == .outOfPhase)
        }
        try gate.accept(.tlsChunk)
        try gate.accept(.authChannel)
        try gate.accept(.hello)
        try gate.accept(.connection)
        try gate.accept(.tlsChunk)
        try gate.accept(.reload)
        #expect(errorCode { () throws(IPCError) in try gate.accept(.hello) } == .outOfPhase)
        try gate.accept(.drain)
    }

    @Test("the supervisor's gate: ready only after hello was sent, credit only after ready, tlsAck only per generation sent")
    func supervisorSequence() throws {
        var gate = FrameGate(local: .supervisor, remote: .broker)
        #expect(errorCode { () throws(IPCError) in try gate.accept(.ready) } == .unsolicitedAnswer)
        #expect(errorCode { () throws(IPCError) in try gate.accept(.tlsAck) } == .unsolicitedAnswer)
        gate.asked(.tlsChunk)
        try gate.accept(.tlsAck)
        gate.asked(.hello)
        #expect(errorCode { () throws(IPCError) in try gate.accept(.credit) } == .outOfPhase)
        #expect(!gate.isOpen)  // the refusals changed nothing
        try gate.accept(.ready)
        try gate.accept(.credit)
        #expect(errorCode { () throws(IPCError) in try gate.accept(.ready) } == .outOfPhase)
    }

    @Test("refusals are violations, and a received frame is checked by its type")
    func receivedFrames() throws {
        let (supervisor, broker) = try HandoffChannel.pair(roles: (.supervisor, .broker))
        var gate = FrameGate(local: .broker, remote: .supervisor)
        try supervisor.send(DrainRequest(deadlineMs: 1))
        try supervisor.send(sampleSettings)
        try supervisor.send(DrainRequest(deadlineMs: 2))
        let early = try receiveFrame(broker)
        let refusal = ipcError { () throws(IPCError) in try gate.accept(early) }
        #expect(refusal?.code == .outOfPhase)
        #expect(refusal?.isViolation == true)
        try gate.accept(try receiveFrame(broker))
        let drain = try receiveFrame(broker)
        try gate.accept(drain)
        #expect(try drain.decode(DrainRequest.self).deadlineMs == 2)
    }
}
