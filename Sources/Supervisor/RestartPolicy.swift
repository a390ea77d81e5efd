import IPC

/// How the supervisor treats one kind of child when it dies or does not come up: the backoff
/// before the next start, how many deaths it tolerates, how long it may take to say `ready`,
/// and which child it must start after. It is a row's policy in the role table, so the broker
/// and the auth helper are restarted by the same code with different numbers.
struct RestartPolicy: Sendable, Equatable {
    /// The delay before the first restart after a death with no other death in the window.
    var firstDelayMs: Int64 = 0
    /// The delay after the second death in the window; it doubles with each further death.
    var baseDelayMs: Int64 = 100
    /// No delay is longer than this.
    var maxDelayMs: Int64 = 5000
    /// Deaths are counted over this window.
    var crashWindowMs: Int64 = 60_000
    /// This many deaths within the window are restarted; one more ends the service (exit
    /// status 1, so that the service manager's own restart policy takes over). nil: never.
    var crashLimit: Int?
    /// The child must report `ready` within this long after it starts, or it is killed (and so
    /// restarted). nil: the role sends no `ready`.
    var startupDeadlineMs: Int64?
    /// The role this one is started after, and with (it needs a channel of that role's): it is
    /// started again whenever that role starts, and not before that role's channel is up.
    var startsWith: Role?
    /// A failed start (spawn or channel set-up) ends the service instead of being retried.
    var failedStartIsFatal = false

    /// The broker: 0, 100, 200, 400, 800 ms; the 6th death within 60 s ends the service; it
    /// has 10 s to say `ready`; a failed start is fatal.
    static let broker = RestartPolicy(crashLimit: 5, startupDeadlineMs: 10_000, failedStartIsFatal: true)
    /// The auth helper: the same backoff capped at 5 s, restarted for ever (while it is down
    /// every registration is denied), started after the broker, whose channel it needs.
    static let authHelper = RestartPolicy(startsWith: .broker)
    /// The cluster role: like the auth helper (restarted for ever, with the broker, whose channel
    /// it needs); while it is down new ids are refused and local peers go on.
    static let cluster = RestartPolicy(startsWith: .broker)

    /// The delay before restarting after `deaths` deaths in the window (the newest included).
    func delayMs(afterDeaths deaths: Int) -> Int64 {
        guard deaths > 1 else { return firstDelayMs }
        return min(maxDelayMs, baseDelayMs << Int64(min(deaths - 2, 16)))
    }
}
