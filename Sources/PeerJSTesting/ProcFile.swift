import Foundation

/// The whole of a /proc file: Foundation stops after the first read of a file whose size is 0,
/// and the tests read `smaps`, `status` and `limits` of the server's processes.
public func readProcFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ProcReadError(path: path, errno: errno) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while bytes.count < 64 << 20 {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        bytes += buffer[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A /proc file that could not be opened (the process has gone, or another user's).
public struct ProcReadError: Error, CustomStringConvertible {
    public let path: String
    public let errno: Int32
    public var description: String { "cannot read \(path): \(String(cString: strerror(errno)))" }
}
