import Glibc

/// A file descriptor with exactly one owner, so a descriptor received from a peer (or accepted
/// from a client) is closed on every path unless someone explicitly takes it over. Being
/// `~Copyable`, it cannot be closed twice by two copies.
/// - Parameters:
///   - rawValue: the descriptor number, for calls that only borrow it (poll, read, sendmsg).
public struct OwnedFD: ~Copyable, Sendable {
    private let fd: Int32

    /// Takes ownership of `fd` (which must be >= 0): it is closed when this value is dropped.
    public init(_ fd: Int32) {
        precondition(fd >= 0, "OwnedFD needs a valid descriptor, got \(fd)")
        self.fd = fd
    }

    /// The descriptor number, still owned by this value.
    public var rawValue: Int32 { fd }

    /// Hands the descriptor on without closing it; the caller now owns it.
    public consuming func release() -> Int32 {
        let fd = self.fd
        discard self
        return fd
    }

    /// Closes the descriptor now (dropping the value does the same).
    public consuming func close() {
        _ = Glibc.close(release())
    }

    deinit {
        _ = Glibc.close(fd)
    }
}
