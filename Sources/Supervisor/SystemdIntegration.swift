import CSystemd
import IPC
import Glibc

/// The supervisor's conversation with systemd: listening sockets passed by socket activation
/// (`LISTEN_FDS`, named by `FileDescriptorName=`) and state notifications (`READY=1`,
/// `RELOADING=1`, `STOPPING=1`, `STATUS=`, `WATCHDOG=1`). Outside systemd every call is a no-op.
enum Systemd {
    /// Listening sockets handed over by the service manager, with their names; empty when the
    /// process was not socket-activated. Clears `LISTEN_*` so children never see them.
    static func activatedListeners() throws(SupervisorError) -> [(descriptor: Int32, name: String)] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count >= 0 else {
            throw SupervisorError(.activation, "socket activation failed: \(SupervisorError.errnoText(-count)); check LISTEN_FDS/LISTEN_PID")
        }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        var result: [(descriptor: Int32, name: String)] = []
        for index in 0..<Int(count) {
            let fd = SD_LISTEN_FDS_START + Int32(index)
            let name = names?[index].map { String(cString: $0) } ?? "unknown"
            guard sd_is_socket(fd, AF_UNSPEC, Int32(SOCK_STREAM.rawValue), 1) > 0 else {
                throw SupervisorError(.activation, "socket-activated fd \(fd) (\(name)) is not a listening stream socket; use ListenStream= with Accept=no")
            }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            result.append((fd, name))
        }
        return result
    }

    /// Sends a state line to the service manager; does nothing outside systemd.
    static func notify(_ state: String) {
        _ = sd_notify(0, state)
    }

    /// The watchdog interval in milliseconds if `WatchdogSec=` is set for this process.
    static func watchdogIntervalMs() -> Int64? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return Int64(usec / 1000)
    }

    /// CLOCK_MONOTONIC in microseconds, for `RELOADING=1` + `MONOTONIC_USEC=`.
    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
