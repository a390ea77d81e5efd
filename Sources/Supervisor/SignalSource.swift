import CShim
import Glibc

/// The supervisor's signals as a readable descriptor (signalfd), so one poll(2) loop handles
/// connections, children and signals without async-signal-safety traps. Must be created before
/// any thread starts, so that every thread keeps the signals blocked.
struct SignalSource {
    let descriptor: Int32

    init(_ signals: [Int32]) throws(SupervisorError) {
        let fd = signals.withUnsafeBufferPointer { cshim_signalfd($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else { throw SupervisorError(.signals, "signalfd failed: \(SupervisorError.errnoText())") }
        descriptor = fd
    }

    /// The signals that arrived since the last call.
    func pending() -> [Int32] {
        var result: [Int32] = []
        for _ in 0..<64 {
            let signal = cshim_signalfd_next(descriptor)
            guard signal > 0 else { break }
            result.append(signal)
        }
        return result
    }
}

/// How a child process ended, from a waitpid(2) status.
enum ChildExit: CustomStringConvertible, Sendable, Equatable {
    case exited(Int32)
    case signalled(Int32)

    init(status: Int32) {
        let low = status & 0x7F
        self = low == 0 ? .exited((status >> 8) & 0xFF) : .signalled(low)
    }

    var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signalled(let signal): "killed by signal \(signal) (\(String(cString: strsignal(signal))))"
        }
    }
}

/// Nanoseconds on the monotonic clock (NIO's uptime clock in the broker is the same one).
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// Milliseconds on the monotonic clock.
func monotonicMilliseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}
