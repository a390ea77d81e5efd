import Glibc

/// The children's stderr when the supervisor's is a regular file (`peerjs 2>>peerjs.log`): the
/// sandbox sets RLIMIT_FSIZE to 0, so a child writing to that file directly would lose every line
/// (EFBIG). They write into a pipe instead and the supervisor copies it into the file. Under
/// systemd (a journal stream), on a terminal or a pipe, children inherit stderr as before, so
/// the journal still attributes each line to the process that wrote it.
final class LogRelay {
    /// The end the supervisor polls and reads (non-blocking).
    let readEnd: Int32
    /// The children's stderr. Non-blocking too: if the supervisor falls behind by a whole pipe
    /// (64 KiB), a child drops a log line rather than stalling its event loop.
    let writeEnd: Int32
    /// One pipe's worth, reused by every ``drain()``.
    private var buffer = [UInt8](repeating: 0, count: 65536)

    private init(readEnd: Int32, writeEnd: Int32) {
        self.readEnd = readEnd
        self.writeEnd = writeEnd
    }

    /// A relay when fd 2 is a regular file, otherwise nil.
    static func ifStderrIsAFile() -> LogRelay? {
        var info = stat()
        guard fstat(2, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { return nil }  // the supervisor is one thread: no spawn races this
        for end in ends {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
        }
        return LogRelay(readEnd: ends[0], writeEnd: ends[1])
    }

    /// Copies what the children have written so far into stderr (bounded: at most 1 MiB per
    /// call, so a chatty child cannot hold up accepting).
    func drain() {
        for _ in 0..<16 {
            let count = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            guard count > 0 else { return }
            var written = 0
            while written < count {
                let n = buffer.withUnsafeBytes { write(2, $0.baseAddress! + written, count - written) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { return }
                written += n
            }
        }
    }

    deinit {
        close(readEnd)
        close(writeEnd)
    }
}
