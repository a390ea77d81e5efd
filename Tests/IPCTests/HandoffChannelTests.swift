import CShim
import Glibc
@testable import IPC
import Testing

/// Sends `bytes` with two descriptors in one SCM_RIGHTS message (something HandoffChannel never does).
private func sendWithTwoFDs(_ socket: Int32, _ bytes: [UInt8], _ first: Int32, _ second: Int32) -> Int {
    let headerSize = MemoryLayout<cmsghdr>.size
    let space = headerSize + 2 * MemoryLayout<Int32>.size
    let control = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: MemoryLayout<cmsghdr>.alignment)
    defer { control.deallocate() }
    control.initializeMemory(as: UInt8.self, repeating: 0, count: space)
    let header = control.bindMemory(to: cmsghdr.self, capacity: 1)
    header.pointee.cmsg_len = space
    header.pointee.cmsg_level = SOL_SOCKET
    header.pointee.cmsg_type = Int32(SCM_RIGHTS)
    (control + headerSize).storeBytes(of: first, as: Int32.self)
    (control + headerSize + 4).storeBytes(of: second, as: Int32.self)
    var data = bytes
    return data.withUnsafeMutableBytes { buffer in
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            var message = msghdr()
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            message.msg_control = control
            message.msg_controllen = space
            return sendmsg(socket, &message, Int32(MSG_NOSIGNAL))
        }
    }
}

/// Sends raw bytes, with an optional descriptor, bypassing HandoffChannel's checks.
private func sendRaw(_ channel: HandoffChannel, _ bytes: [UInt8], fd: Int32 = -1) -> Int {
    bytes.withUnsafeBytes { cshim_send_frame(channel.rawFD, $0.baseAddress, $0.count, fd, 0) }
}

@Suite("HandoffChannel over a real socketpair")
struct HandoffChannelTests {
    @Test("a connection frame carries its fd: write through the received fd, read from the pipe")
    func connectionWithFD() throws {
        let (supervisor, broker) = try HandoffChannel.pair(roles: (.supervisor, .broker))
        let pipe = makePipe()
        defer { close(pipe.read) }
        try supervisor.send(sampleHandoff, requestID: 7, fd: pipe.write)
        close(pipe.write)  // the frame holds the only other reference now

        var frame = try receiveFrame(broker)
        #expect(frame.type == .connection)
        #expect(frame.requestID == 7)
        #expect(frame.header.hasFD)
        #expect(try frame.decode(ConnectionHandoff.self) == sampleHandoff)
        guard let fd = frame.takeFD() else {
            Issue.record("no fd arrived with the connection frame")
            return
        }
        let takenTwice = frame.takeFD() != nil
        #expect(!takenTwice)
        #expect(fcntl(fd.rawValue, F_GETFD) & FD_CLOEXEC != 0)  // MSG_CMSG_CLOEXEC
        let message: [UInt8] = Array("through the handed-off fd".utf8)
        #expect(write(fd.rawValue, message, message.count) == message.count)
        fd.close()
        #expect(readToEOF(pipe.read) == message)
    }

    @Test("dropping a received frame closes its fd")
    func droppedFrameClosesFD() throws {
        let (supervisor, broker) = try HandoffChannel.pair()
        let pipe = makePipe()
        defer { close(pipe.read) }
        try supervisor.send(sampleHandoff, fd: pipe.write)
        close(pipe.write)
        do {
            let frame = try receiveFrame(broker)
            #expect(frame.type == .connection)
        }
        #expect(pipeReachedEOF(pipe.read))
    }

    @Test("hello, ready, credit and drain travel with their typed payloads")
    func typedMessages() throws {
        let (supervisor, broker) = try HandoffChannel.pair(roles: (.supervisor, .broker))
        try supervisor.send(sampleSettings)
        try broker.send(BrokerReady())
        try broker.send(AdmissionCredit(count: 5), requestID: 9)
        try supervisor.send(DrainRequest(deadlineMs: 30_000))

        let hello = try receiveFrame(broker)
        #expect(hello.type == .hello)
        #expect(try hello.decode(BrokerSettings.self) == sampleSettings)
        let helloHasFD = hello.fd != nil
        #expect(!helloHasFD)
        let ready = try receiveFrame(supervisor)
        #expect(ready.type == .ready && ready.payload.isEmpty)
        let credit = try receiveFrame(supervisor)
        #expect(credit.requestID == 9)
        #expect(try credit.decode(AdmissionCredit.self) == AdmissionCredit(count: 5))
        let drain = try receiveFrame(broker)
        #expect(try drain.decode(DrainRequest.self).deadlineMs == 30_000)
    }

    @Test("the sender refuses table violations before anything is sent")
    func senderChecks() throws {
        let (supervisor, broker) = try HandoffChannel.pair(roles: (.supervisor, .broker))
        let pipe = makePipe()
        defer { close(pipe.read); close(pipe.write) }
        #expect(errorCode { () throws(IPCError) in try supervisor.send(type: .connection, payload: sampleHandoff.encode()) } == .fdMismatch)
        #expect(errorCode { () throws(IPCError) in try supervisor.send(type: .drain, payload: [0, 0, 0, 1], fd: pipe.write) } == .fdMismatch)
        #expect(errorCode { () throws(IPCError) in try supervisor.send(BrokerReady()) } == .wrongDirection)
        #expect(errorCode { () throws(IPCError) in try broker.send(sampleSettings) } == .wrongDirection)
        #expect(errorCode { () throws(IPCError) in try supervisor.send(sampleHandoff) } == .fdMismatch)
        #expect(errorCode { () throws(IPCError) in try supervisor.send(type: .connection, payload: [], fd: -5) } == .invalidArgument)
        try broker.setNonBlocking(true)
        #expect(receiveError(broker) == .wouldBlock)
    }

    @Test("a connection frame without an fd is a violation")
    func connectionWithoutFD() throws {
        let (supervisor, broker) = try HandoffChannel.pair(roles: (.supervisor, .broker))
        let payload = sampleHandoff.encode()
        for flags: UInt8 in [0, 1] {
            let record = rawHeader(flags: flags, type: FrameType.connection.rawValue, length: UInt32(payload.count)) + payload
            #expect(sendRaw(supervisor, record) == record.count)
            do {
                _ = try broker.receive()
                Issue.record("a connection frame without an fd was accepted")
            } catch {
                #expect(error.code == .fdMismatch)
                #expect(error.isViolation)
            }
        }
    }

    @Test("an fd attached to a type that carries none is a violation and the stray fd is closed")
    func strayFD() throws {
        let (supervisor, broker) = try HandoffChannel.pair()
        for flags: UInt8 in [0, 1] {
            let pipe = makePipe()
            defer { close(pipe.read) }
            let record = rawHeader(flags: flags, type: FrameType.drain.rawValue, length: 4) + [0, 0, 0, 1]
            #expect(sendRaw(supervisor, record, fd: pipe.write) == record.count)
            close(pipe.write)
            #expect(receiveError(broker) == .fdMismatch)
            // The receiver's copy was the last write end: EOF proves it was closed.
            #expect(pipeReachedEOF(pipe.read))
        }
    }

    @Test("a frame travelling the wrong way is refused, and its fd closed")
    func wrongDirection() throws {
        let (supervisor, broker) = try HandoffChannel.pair(roles: (.supervisor, .broker))
        let pipe = makePipe()
        defer { close(pipe.read) }
        let payload = sampleHandoff.encode()
        let record = rawHeader(flags: 1, type: FrameType.connection.rawValue, length: UInt32(payload.count)) + payload
        #expect(sendRaw(broker, record, fd: pipe.write) == record.count)  // broker → supervisor: not allowed
        close(pipe.write)
        #expect(receiveError(supervisor) == .wrongDirection)
        #expect(pipeReachedEOF(pipe.read))
    }

    @Test("two fds in one record are a violation and both are closed")
    func twoFDs() throws {
        let (supervisor, broker) = try HandoffChannel.pair()
        let first = makePipe()
        let second = makePipe()
        defer { close(first.read); close(second.read) }
        let payload = sampleHandoff.encode()
        let record = rawHeader(flags: 1, type: FrameType.connection.rawValue, length: UInt32(payload.count)) + payload
        #expect(sendWithTwoFDs(supervisor.rawFD, record, first.write, second.write) == record.count)
        close(first.write)
        close(second.write)
        #expect(receiveError(broker) == .truncated)
        #expect(pipeReachedEOF(first.read))
        #expect(pipeReachedEOF(second.read))
    }

    @Test("short, oversize and garbage records are violations")
    func badRecords() throws {
        let (supervisor, broker) = try HandoffChannel.pair()
        #expect(sendRaw(supervisor, [1, 0, 0, 2, 0]) == 5)
        #expect(receiveError(broker) == .truncated)

        let huge = rawHeader(type: FrameType.hello.rawValue, length: 0) + [UInt8](repeating: 0, count: 70 * 1024)
        #expect(sendRaw(supervisor, huge) == huge.count)
        #expect(receiveError(broker) == .oversize)

        let bad = rawHeader(version: 2, type: FrameType.ready.rawValue, length: 0)
        #expect(sendRaw(supervisor, bad) == bad.count)
        #expect(receiveError(broker) == .badVersion)

        // The channel itself still works: records stay separate.
        try supervisor.send(DrainRequest(deadlineMs: 1))
        #expect(try receiveFrame(broker).type == .drain)
    }

    @Test("end of stream returns nil")
    func endOfStream() throws {
        var (supervisor, broker): (HandoffChannel?, HandoffChannel) = try HandoffChannel.pair()
        try supervisor?.send(BrokerReady())
        supervisor = nil
        #expect(try receiveFrame(broker).type == .ready)
        #expect(try receiveIsEndOfStream(broker))
        #expect(try receiveIsEndOfStream(broker))
    }

    @Test("sending to a closed peer is a system error (EPIPE), not a signal")
    func closedPeer() throws {
        var (supervisor, broker): (HandoffChannel, HandoffChannel?) = try HandoffChannel.pair()
        broker = nil
        _ = broker
        #expect(errorCode { () throws(IPCError) in try supervisor.send(BrokerReady()) } == .system(EPIPE))
    }

    @Test("a non-blocking send into a full socket reports would-block, then everything arrives")
    func wouldBlock() throws {
        let (supervisor, broker) = try HandoffChannel.pair()
        try supervisor.setNonBlocking(true)
        try broker.setNonBlocking(true)
        let payload = [UInt8](repeating: 0xAA, count: 1024)
        var sent = 0
        var blocked = false
        for _ in 0..<100_000 {
            do {
                try supervisor.send(type: .hello, requestID: UInt32(sent + 1), payload: payload)
                sent += 1
            } catch {
                #expect(error.code == .wouldBlock)
                #expect(!error.isViolation)
                blocked = true
                break
            }
        }
        #expect(blocked)
        #expect(sent > 0)
        var received = 0
        for _ in 0...sent {
            do {
                guard let frame = try broker.receive() else { break }
                received += 1
                #expect(frame.requestID == UInt32(received))
                #expect(frame.payload == payload)
            } catch {
                #expect(error.code == .wouldBlock)
                break
            }
        }
        #expect(received == sent)
        #expect(receiveError(broker) == .wouldBlock)
        // Space again after draining.
        try supervisor.send(BrokerReady())
    }
}
