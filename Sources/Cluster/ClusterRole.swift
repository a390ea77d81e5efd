import Glibc
public import IPC
public import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The cluster role (`peerjs --role cluster`): takes its settings from the supervisor, enters
/// its sandbox (which allows it TCP connections and nothing new besides), and runs the
/// ``ClusterNode`` between the broker's channel and PostgreSQL until the broker or the
/// supervisor goes away; then its rows leave the directory and it exits.
public enum ClusterRole {
    /// Runs the role; returns the exit status.
    /// - Parameters:
    ///   - configure: called with the settings first (the executable sets the log level).
    ///   - confine: called once the event loop threads run, before the first connection: the
    ///     executable enters the sandbox here. Throwing ends the role with status 3.
    public static func run(
        brokerDescriptor: Int32, supervisorDescriptor: Int32, logger: Logger,
        configure: (ClusterSettings) -> Void, confine: (ClusterSettings) throws -> Void
    ) -> Int32 {
        let supervisor = HandoffChannel(adopting: supervisorDescriptor, roles: ChannelRoles(local: .cluster, remote: .supervisor))
        let brokerChannel = HandoffChannel(adopting: brokerDescriptor, roles: ChannelRoles(local: .cluster, remote: .broker))
        var gate = FrameGate(local: .cluster, remote: .supervisor)
        let settings: ClusterSettings
        do {
            guard var frame = try supervisor.receive() else {
                logger.notice("supervisor went away before clusterHello")
                return 0
            }
            defer { frame.wipePayload() }
            try gate.accept(frame)
            settings = try frame.decode(ClusterSettings.self)
        } catch {
            logger.error("cluster role start-up failed: \(error)")
            return 2
        }
        configure(settings)
        // Swift concurrency runs on NIO's threads, made now: nothing creates a thread pool, an
        // epoll or an eventfd after the filter is in.
        NIOSingletons.groupLoopCountSuggestion = 1
        guard NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() else {
            // Its own executor would make threads and descriptors after the filter.
            logger.critical("cannot run Swift concurrency on NIO's event loop; refusing to run the cluster role")
            return 3
        }
        let group = MultiThreadedEventLoopGroup.singleton
        do {
            try group.next().submit {}.wait()
            // A task runs once before the filter, so whatever the executor sets up exists by
            // then. (The role never sleeps with Task.sleep: see ClusterNode.pause(for:).)
            let warm = group.next().makePromise(of: Void.self)
            Task { warm.succeed() }
            try warm.futureResult.wait()
            try confine(settings)
        } catch {
            logger.critical("cannot enter the sandbox: \(error)")
            return 3
        }
        let broker = BrokerLink(channel: brokerChannel)
        let node = ClusterNode(settings: settings, logger: logger, group: group, broker: broker)
        broker.start()
        logger.info("cluster role serving instance \(settings.instance) (database \(settings.database) on \(settings.addresses.joined(separator: ", ")) port \(settings.port))")
        let serving = Task {
            let connection = Task { await node.run() }
            for await event in broker.events {
                if case .closed(let why) = event {
                    logger.notice("\(why); leaving the peer directory")
                    break
                }
                await node.submit(event) { broker.handled(event) }
            }
            connection.cancel()
        }
        // The supervisor's channel carries nothing after the hello: its end is the stop; the
        // broker's end stops the role too (it is started again with the next broker).
        Task {
            _ = await serving.value
            _ = Glibc.shutdown(supervisor.rawFD, Int32(SHUT_RDWR))
        }
        var exitStatus: Int32 = 0
        while true {
            do {
                guard let frame = try supervisor.receive() else { break }
                logger.error("unexpected \(frame.type) frame from the supervisor; exiting")
                exitStatus = 2
                break
            } catch {
                logger.error("bad frame from the supervisor (\(error)); exiting")
                exitStatus = 2
                break
            }
        }
        serving.cancel()
        // Leave the directory (this instance's rows go now, not at expiry), for at most 2 s.
        let stopped = ConditionLock(value: 0)
        Task {
            await node.stop()
            stopped.lock()
            stopped.unlock(withValue: 1)
        }
        if stopped.lock(whenValue: 1, timeoutSeconds: 2) { stopped.unlock() }
        return exitStatus
    }
}
