import AuthHelper
import Cluster
import Broker
import IPC
import Logging
import Sandbox
import Supervisor

/// The child side of the process table: what `peerjs --role NAME` runs. Each entry reads its
/// settings from its channel (descriptor numbers from `ProcessTable`), enters its sandbox and
/// serves; the supervisor's side of the same role is its `RoleRow`. Adding a role adds one entry.
extension PeerJSCommand {
    static var childRoles: [String: (PeerJSCommand, Logger) -> Int32] {
        [
            Role.broker.rawValue: { $0.runBroker(logger: $1) },
            Role.auth.rawValue: { $0.runAuthHelper(logger: $1) },
            Role.cluster.rawValue: { $0.runCluster(logger: $1) },
            "sandbox-probe": { $0.runSandboxProbe(logger: $1) },
        ]
    }

    func runBroker(logger: Logger) -> Int32 {
        BrokerRole.run(channelDescriptor: ProcessTable.descriptor(of: .broker, to: .supervisor), logger: logger) { settings in
            JournalLogHandler.setLevel(settings.process.logLevel)
            try confine(settings.process, seccomp: .broker, openFiles: settings.wantedOpenFiles, logger: logger)
        }
    }

    func runAuthHelper(logger: Logger) -> Int32 {
        AuthHelperRole.run(
            brokerDescriptor: ProcessTable.descriptor(of: .auth, to: .broker),
            supervisorDescriptor: ProcessTable.descriptor(of: .auth, to: .supervisor), logger: logger,
            configure: { settings in
                JournalLogHandler.setLevel(settings.process.logLevel)
                return Self.authOptions(settings)
            },
            confine: { settings, startProgram, beforeFilter in
                try confineAuthHelper(settings, logger: logger, startProgram: startProgram, beforeFilter: beforeFilter)
            })
    }

    func runCluster(logger: Logger) -> Int32 {
        ClusterRole.run(
            brokerDescriptor: ProcessTable.descriptor(of: .cluster, to: .broker),
            supervisorDescriptor: ProcessTable.descriptor(of: .cluster, to: .supervisor), logger: logger,
            configure: { settings in JournalLogHandler.setLevel(settings.process.logLevel) },
            confine: { settings in try confine(settings.process, seccomp: .cluster, openFiles: 64, logger: logger) })
    }

    /// Not a supervised role: the sandbox tests start it by hand, with its settings as flags.
    func runSandboxProbe(logger: Logger) -> Int32 {
        var process = brokerProcess
        if probePolicy == "auth" { process.chrootDirectory = "" }  // the helper has no chroot
        return SandboxProbe.run(attempt: probeTry, policy: probePolicy, logger: logger) { [process] in
            try confine(process, seccomp: SeccompPolicy.named(probePolicy) ?? .broker,
                        openFiles: brokerSettings.wantedOpenFiles, logger: logger)
        }
    }
}
