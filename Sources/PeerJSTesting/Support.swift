import Foundation

/// A TCP port on 127.0.0.1 that was free a moment ago, for what cannot bind port 0 itself
/// (systemd-socket-activate, a second listener named on the command line).
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw HarnessError("no free port on 127.0.0.1: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Errors raised by the test harness; each says what was being waited for, so a failing test explains itself.
public struct HarnessError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, in words.
    public let description: String

    /// - Parameters:
    ///   - description: what went wrong, including what was expected.
    public init(_ description: String) {
        self.description = description
    }
}

/// A thread-safe single-consumer queue with bounded waits, used to hand events from NIO event loops and reader
/// threads to async test code without blocking the cooperative thread pool.
final class Inbox<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer: [Element] = []
    private var waiter: (id: UInt64, continuation: CheckedContinuation<Element?, Never>)?
    private var nextWaiterID: UInt64 = 0
    private var expired: Set<UInt64> = []
    /// An element that, once pushed, is returned by every later pop (end of stream).
    private var sticky: Element?

    func push(_ element: Element, sticky isSticky: Bool = false) {
        lock.lock()
        if isSticky {
            if sticky != nil {
                lock.unlock()
                return
            }
            sticky = element
        } else {
            buffer.append(element)
        }
        if let waiter = self.waiter {
            self.waiter = nil
            let next = buffer.isEmpty ? sticky! : buffer.removeFirst()
            lock.unlock()
            waiter.continuation.resume(returning: next)
            return
        }
        lock.unlock()
    }

    /// The buffered elements not yet popped (for diagnostics).
    var pending: [Element] {
        lock.lock()
        defer { lock.unlock() }
        return buffer
    }

    /// The next element, or `nil` after `timeout`.
    private func takeOrReserve() -> (element: Element?, waiterID: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        if !buffer.isEmpty { return (buffer.removeFirst(), 0) }
        if let sticky { return (sticky, 0) }
        nextWaiterID += 1
        return (nil, nextWaiterID)
    }

    func pop(timeout: Duration) async -> Element? {
        let (ready, id) = takeOrReserve()
        if let ready { return ready }

        let timer = Task {
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { self.expire(id) }
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
            lock.lock()
            if !buffer.isEmpty {
                let element = buffer.removeFirst()
                lock.unlock()
                continuation.resume(returning: element)
            } else if let sticky {
                lock.unlock()
                continuation.resume(returning: sticky)
            } else if expired.remove(id) != nil {
                lock.unlock()
                continuation.resume(returning: nil)
            } else {
                precondition(waiter == nil, "Inbox supports one waiter at a time")
                waiter = (id, continuation)
                lock.unlock()
            }
        }
    }

    private func expire(_ id: UInt64) {
        lock.lock()
        if let waiter, waiter.id == id {
            self.waiter = nil
            lock.unlock()
            waiter.continuation.resume(returning: nil)
            return
        }
        expired.insert(id)
        lock.unlock()
    }
}

/// A value guarded by a lock, for small shared state in the harness.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }

    var current: Value { withLock { $0 } }
}

/// Helpers for timing assertions.
public enum Stopwatch {
    /// Now, on the monotonic clock.
    public static var now: ContinuousClock.Instant { ContinuousClock.now }

    /// Milliseconds elapsed since `start`.
    /// - Parameters:
    ///   - start: an instant from ``now``.
    public static func milliseconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
    }
}

/// Random identifiers for tests that share one server and run in parallel.
public enum Unique {
    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")

    /// A random alphanumeric string of `length` characters.
    /// - Parameters:
    ///   - length: number of characters.
    public static func token(_ length: Int = 10) -> String {
        String((0..<length).map { _ in alphabet.randomElement()! })
    }

    /// An id valid for the PeerJS client: `prefix-<random>`.
    /// - Parameters:
    ///   - prefix: a readable alphanumeric prefix naming the role of the peer in the test.
    public static func id(_ prefix: String) -> String {
        "\(prefix)-\(token(8))"
    }
}
