public import IPC
import Sandbox

/// One of a child's channels: the role at the other end and the descriptor number the child
/// finds it at. Both sides take the number from ``ProcessTable``, so it is written once.
/// - Parameters:
///   - peer: the role at the other end (the supervisor, or another child).
///   - descriptor: the child's descriptor number for it (3 or more).
///   - introducedBy: for a channel to another child, the frame that carries the other end to
///     that child over its supervisor channel; nil for the channel to the supervisor.
public struct ChannelEnd: Sendable, Equatable {
    public let peer: Role
    public let descriptor: Int32
    public let introducedBy: FrameType?
}

/// The process table (httpd's `proc.c`, OpenSSH's `README.privsep`): what the child side needs
/// of it — the descriptors of each role's channels — public; the supervisor's rows
/// (``RoleRow``) beside it.
public enum ProcessTable {
    /// The channels `role` is started with, in descriptor order.
    public static func channels(of role: Role) -> [ChannelEnd] {
        switch role {
        case .supervisor: []
        case .broker: [ChannelEnd(peer: .supervisor, descriptor: 3, introducedBy: nil)]
        case .auth:
            [ChannelEnd(peer: .broker, descriptor: 3, introducedBy: .authChannel),
             ChannelEnd(peer: .supervisor, descriptor: 4, introducedBy: nil)]
        case .cluster:
            [ChannelEnd(peer: .broker, descriptor: 3, introducedBy: .clusterChannel),
             ChannelEnd(peer: .supervisor, descriptor: 4, introducedBy: nil)]
        }
    }

    /// The descriptor `role` finds its channel to `peer` at; -1 (an invalid descriptor, so
    /// the first use fails with EBADF) when it has none.
    public static func descriptor(of role: Role, to peer: Role) -> Int32 {
        channels(of: role).first { $0.peer == peer }?.descriptor ?? -1
    }

    /// The rows for this configuration, leaders before the roles started with them: the broker,
    /// the auth helper when one is configured, the cluster role when `--cluster` is set.
    static func rows(for configuration: SupervisorConfiguration) -> [RoleRow] {
        var rows = [
            RoleRow(
                role: .broker, name: "broker", user: configuration.broker.process.user, seccomp: .broker,
                arguments: [configuration.argv0, "--role", Role.broker.rawValue], ownSession: false, restart: .broker,
                hello: { (supervisor: Supervisor, channel: HandoffChannel) throws(IPCError) in
                    try supervisor.brokerHello(over: channel)
                },
                frames: { (supervisor: Supervisor, frame: borrowing ReceivedFrame) throws(IPCError) in
                    try supervisor.brokerFrame(frame)
                })
        ]
        if let settings = configuration.auth {
            rows.append(RoleRow(
                role: .auth, name: "auth helper", user: settings.process.user, seccomp: .auth,
                arguments: [configuration.argv0, "--role", Role.auth.rawValue], ownSession: true, restart: .authHelper,
                hello: { (_: Supervisor, channel: HandoffChannel) throws(IPCError) in
                    try Supervisor.send(settings, over: channel, until: monotonicMilliseconds() + Supervisor.setupSendDeadlineMs)
                },
                frames: { (supervisor: Supervisor, frame: borrowing ReceivedFrame) in
                    supervisor.unexpected(frame, from: .auth)
                }))
        }
        if let settings = configuration.cluster {
            rows.append(RoleRow(
                role: .cluster, name: "cluster role", user: settings.process.user, seccomp: .cluster,
                arguments: [configuration.argv0, "--role", Role.cluster.rawValue], ownSession: false, restart: .cluster,
                hello: { (_: Supervisor, channel: HandoffChannel) throws(IPCError) in
                    try Supervisor.send(settings, over: channel, until: monotonicMilliseconds() + Supervisor.setupSendDeadlineMs)
                },
                frames: { (supervisor: Supervisor, frame: borrowing ReceivedFrame) in
                    supervisor.unexpected(frame, from: .cluster)
                }))
        }
        return rows
    }
}

/// One row of the process table: everything that differs between two kinds of child, so one
/// spawn, one reader and one restart path serve them all. Adding a role is adding a row (and its
/// handler, policy and channels).
struct RoleRow {
    let role: Role
    /// The name in log lines.
    let name: String
    /// The user it drops to (checked before the first spawn when it can drop).
    let user: String?
    /// Its seccomp policy (the child installs it; the user is looked up under its role).
    let seccomp: SeccompPolicy
    /// Its argv, starting with argv[0] (`--role NAME` among them).
    let arguments: [String]
    /// It leads a session of its own, so whatever it starts dies with it.
    let ownSession: Bool
    let restart: RestartPolicy
    /// The setup phase on its supervisor channel, ending with the settings it gets in `hello`.
    let hello: (Supervisor, HandoffChannel) throws(IPCError) -> Void
    /// What a frame it sends the supervisor means; nil: nothing for the policy.
    let frames: (Supervisor, borrowing ReceivedFrame) throws(IPCError) -> SupervisorPolicy.Event?

    /// Its channels and their descriptor numbers.
    var channels: [ChannelEnd] { ProcessTable.channels(of: role) }
}
