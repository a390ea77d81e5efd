import CShim
import Glibc

/// One end of an AF_UNIX SOCK_SEQPACKET socketpair between two roles: one frame per record, so a
/// passed descriptor is tied to exactly one frame, and every received frame is checked strictly
/// (see ``FrameCodec/decode(record:fdAttached:roles:)``) before anyone reads its payload.
///
/// The channel owns its descriptor and closes it when released. It holds no mutable state, so it
/// is `Sendable`; the kernel keeps records whole even with concurrent senders.
/// - Parameters:
///   - rawFD: the socket, for poll(2)/epoll; still owned by the channel.
///   - roles: when set, frames that may not travel from `roles.remote` to `roles.local` are
///     refused on receive, and frames `roles.local` may not send are refused on send.
public final class HandoffChannel: Sendable {
    private let socket: OwnedFD
    public let roles: ChannelRoles?

    /// How often an interrupted (EINTR) sendmsg/recvmsg is retried before giving up.
    private static let maxInterruptedRetries = 64

    /// Takes ownership of an already connected SEQPACKET socket (for example fd 3 in a child) and
    /// makes it close-on-exec: a role's channels arrive by dup2 (which clears the flag), and a
    /// program the role starts (the auth helper's policy program) must never inherit one.
    /// (F_SETFD fails only for a descriptor that is not open, which the first send or receive
    /// reports.)
    public init(adopting fd: Int32, roles: ChannelRoles? = nil) {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        socket = OwnedFD(fd)
        self.roles = roles
    }

    /// A connected pair (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC). With `roles`, the first end acts
    /// as `roles.first` talking to `roles.second`, and the second end the other way round.
    public static func pair(roles: (first: Role, second: Role)? = nil) throws(IPCError) -> (HandoffChannel, HandoffChannel) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw IPCError.system("socketpair(AF_UNIX, SOCK_SEQPACKET)")
        }
        let firstRoles = roles.map { ChannelRoles(local: $0.first, remote: $0.second) }
        let secondRoles = roles.map { ChannelRoles(local: $0.second, remote: $0.first) }
        return (HandoffChannel(adopting: fds[0], roles: firstRoles), HandoffChannel(adopting: fds[1], roles: secondRoles))
    }

    public var rawFD: Int32 { socket.rawValue }

    /// Switches O_NONBLOCK on or off. When on, ``send(_:requestID:fd:nonBlocking:)`` and
    /// ``receive()`` throw ``IPCError/Code/wouldBlock`` instead of waiting.
    public func setNonBlocking(_ on: Bool) throws(IPCError) {
        let flags = fcntl(rawFD, F_GETFL)
        guard flags >= 0 else { throw IPCError.system("fcntl(F_GETFL)") }
        let wanted = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        guard wanted == flags || fcntl(rawFD, F_SETFL, wanted) == 0 else { throw IPCError.system("fcntl(F_SETFL)") }
    }

    /// Sends `message` as one frame of its own type (``IPCMessage/frameType``) in one sendmsg(2),
    /// after ``IPCMessage/encodeChecked()`` (so an over-long field fails here, not at the peer).
    /// `fd` is only borrowed: the kernel passes a duplicate, so the caller closes its own copy
    /// after a successful send (and keeps it to retry after ``IPCError/Code/wouldBlock``).
    ///
    /// Throws ``IPCError/Code/wouldBlock`` when a non-blocking socket is full (nothing was sent),
    /// a table error (wrong direction, oversize payload, fd where the type carries none or vice
    /// versa) before anything is sent, or ``IPCError/Code/system(_:)`` (EPIPE: the peer is gone).
    /// With `nonBlocking`, this one send does not wait for room even on a blocking socket
    /// (MSG_DONTWAIT): a thread that must never stall sends this way.
    @inlinable
    public func send<M: IPCMessage>(_ message: M, requestID: UInt32 = 0, fd: Int32? = nil, nonBlocking: Bool = false) throws(IPCError) {
        var frame = try EncodedFrame(message, requestID: requestID)
        // A key chunk's payload is a copy of the key: zero it before it is freed.
        defer { frame.wipeSecret() }
        try send(frame, fd: fd, nonBlocking: nonBlocking)
    }

    /// Sends a frame encoded earlier (see ``EncodedFrame``); otherwise as ``send(_:requestID:fd:nonBlocking:)``.
    public func send(_ frame: EncodedFrame, fd: Int32? = nil, nonBlocking: Bool = false) throws(IPCError) {
        try send(type: frame.type, requestID: frame.requestID, payload: frame.payload, fd: fd, nonBlocking: nonBlocking)
    }

    /// One frame of `type` with a raw payload: internal, so outside this module a payload goes
    /// out only under its own message's type (tests reach it with `@testable import`).
    func send(
        type: FrameType, requestID: UInt32 = 0, payload: [UInt8] = [], fd: Int32? = nil, nonBlocking: Bool = false
    ) throws(IPCError) {
        if let fd, fd < 0 {
            throw IPCError(.invalidArgument, "cannot send descriptor \(fd); pass nil for frames without one")
        }
        var record = try FrameCodec.encode(type: type, requestID: requestID, payload: payload, hasFD: fd != nil, roles: roles)
        // A key chunk's record is a copy of the key: zero it before it is freed.
        defer { if type.carriesSecret { SecretBytes.wipe(&record) } }
        for _ in 0...Self.maxInterruptedRetries {
            var error: Int32 = 0
            let sent = record.withUnsafeBytes { buffer in
                let n = cshim_send_frame(rawFD, buffer.baseAddress, buffer.count, fd ?? -1, nonBlocking ? Int32(MSG_DONTWAIT) : 0)
                error = errno
                return n
            }
            if sent == record.count { return }
            if sent >= 0 {
                throw IPCError(.truncated, "sendmsg sent \(sent) of \(record.count) bytes of a \(type.name) frame; the channel is unusable, close it")
            }
            switch error {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK:
                throw IPCError(.wouldBlock, "channel is full; keep the frame (and its descriptor) and retry when poll(2) reports POLLOUT")
            default:
                throw IPCError.system("sendmsg(\(type.name))", errno: error)
            }
        }
        throw IPCError.system("sendmsg(\(type.name))", errno: EINTR)
    }

    /// Receives and checks one frame. Returns nil at end of stream (the peer closed its end, or
    /// sent a zero-length record, which SEQPACKET cannot tell apart). Throws
    /// ``IPCError/Code/wouldBlock`` when a non-blocking socket is empty, a violation code (see
    /// ``IPCError/isViolation``) for a bad frame, or ``IPCError/Code/system(_:)``.
    /// Any descriptor that arrived with a refused frame is closed before this returns.
    public func receive() throws(IPCError) -> ReceivedFrame? {
        let capacity = FrameCodec.maxRecordSize
        for _ in 0...Self.maxInterruptedRetries {
            var received = -1
            var error: Int32 = 0
            var fdOut: Int32 = -1
            var truncated: Int32 = 0
            // MSG_TRUNC makes recvmsg return the real record length, so an oversize record is
            // reported as such; the kernel still copies at most `capacity` bytes.
            var record = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
                received = cshim_recv_frame(rawFD, buffer.baseAddress, capacity, &fdOut, &truncated, Int32(MSG_TRUNC))
                error = errno
                count = max(0, min(received, capacity))
            }
            // Zeroed before it is freed whatever its type says (a key chunk's record is a copy of
            // the key); the decoded payload is a copy of its own.
            defer { SecretBytes.wipe(&record) }
            if received < 0 {
                switch error {
                case EINTR: continue
                case EAGAIN, EWOULDBLOCK:
                    throw IPCError(.wouldBlock, "channel is empty; call receive() again when poll(2) reports POLLIN")
                default:
                    throw IPCError.system("recvmsg", errno: error)
                }
            }
            let hasFD = fdOut >= 0
            let attached: OwnedFD?
            if hasFD { attached = OwnedFD(fdOut) } else { attached = nil }
            if truncated == 2, !hasFD, received > 0, received <= capacity {
                // The descriptor table is full: one descriptor is lost, the record is whole. The
                // header must still say that the type carries a descriptor.
                let (header, payload) = try FrameCodec.decode(record: record, fdAttached: true, roles: roles)
                return ReceivedFrame(header: header, payload: payload, fd: nil, descriptorLost: true)
            }
            if truncated != 0 {
                if received > capacity {
                    throw IPCError(.oversize, "record of \(received) bytes exceeds the \(capacity)-byte maximum; the peer is broken, close the channel")
                }
                throw IPCError(.truncated, "record or its control data was truncated, or more than one descriptor arrived (all were closed); the peer is broken, close the channel")
            }
            if received == 0 { return nil }
            let (header, payload) = try FrameCodec.decode(record: record, fdAttached: hasFD, roles: roles)
            return ReceivedFrame(header: header, payload: payload, fd: attached)
        }
        throw IPCError.system("recvmsg", errno: EINTR)
    }
}
