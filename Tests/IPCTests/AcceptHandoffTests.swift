import CShim
import Glibc
import IPC
import Testing

@Suite("Accept and hand off (the supervisor's path)")
struct AcceptHandoffTests {
    @Test("an accepted TCP socket is close-on-exec and non-blocking, and reaches the broker with its address")
    func acceptAndHandOff() throws {
        let listener = OwnedFD(socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener.rawValue, $0, length) }
        }
        #expect(bound == 0)
        #expect(listen(listener.rawValue, 4) == 0)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener.rawValue, $0, &length) }
        }

        let client = OwnedFD(socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client.rawValue, $0, length) }
        }
        #expect(connected == 0)

        var peer = sockaddr_storage()
        var peerLength = UInt32(MemoryLayout<sockaddr_storage>.size)
        let acceptedFD = cshim_accept4(listener.rawValue, &peer, &peerLength)
        #expect(acceptedFD >= 0)
        let accepted = OwnedFD(acceptedFD)
        #expect(fcntl(accepted.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        #expect(fcntl(accepted.rawValue, F_GETFL) & O_NONBLOCK != 0)

        var clientAddress = sockaddr_storage()
        var clientLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &clientAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(client.rawValue, $0, &clientLength) }
        }
        let handoff = ConnectionHandoff(peer: PeerAddress(peer), tls: false)
        #expect(handoff.peer == PeerAddress(clientAddress))
        #expect(handoff.peer.description.hasPrefix("127.0.0.1:"))

        let (supervisor, broker) = try HandoffChannel.pair(roles: (.supervisor, .broker))
        try supervisor.send(handoff, fd: accepted.rawValue)
        accepted.close()  // the supervisor's copy goes; the broker's copy keeps the connection open

        var frame = try receiveFrame(broker)
        #expect(try frame.decode(ConnectionHandoff.self) == handoff)
        guard let connection = frame.takeFD() else {
            Issue.record("no fd arrived")
            return
        }
        let request = Array("GET /peerjs/id HTTP/1.1\r\n\r\n".utf8)
        #expect(write(client.rawValue, request, request.count) == request.count)
        #expect(waitReadable(connection.rawValue))
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(connection.rawValue, &buffer, buffer.count)
        #expect(n == request.count)
        #expect(Array(buffer.prefix(max(n, 0))) == request)
    }

    @Test("the id wrappers accept the current ids (a no-op change)")
    func idWrappers() {
        #expect(cshim_setresgid(getgid()) == 0)
        #expect(cshim_setresuid(getuid()) == 0)
    }
}
