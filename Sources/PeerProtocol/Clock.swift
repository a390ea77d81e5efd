/// A monotonic clock in milliseconds, injected so that the protocol's timing rules
/// (queue expiry, liveness) are tested without sockets or sleeps.
public protocol MonotonicClock {
    /// Milliseconds since an arbitrary, fixed origin; never goes backwards.
    var nowMilliseconds: Int64 { get }
}

/// A clock that moves only when told to: the protocol tests' time machine.
public final class ManualClock: MonotonicClock {
    public var nowMilliseconds: Int64

    public init(startingAt milliseconds: Int64 = 0) {
        self.nowMilliseconds = milliseconds
    }

    public func advance(by milliseconds: Int64) {
        precondition(milliseconds >= 0, "a monotonic clock cannot go back")
        nowMilliseconds += milliseconds
    }
}
