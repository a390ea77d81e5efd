import Foundation
import Glibc
import PeerJSTesting
import Sandbox
import Testing

/// Runs `peerjs --role sandbox-probe` (the broker's event loop, the broker's sandbox, then one
/// call) as the tests' own user; when that is root the probe drops to `nobody` in a fresh chroot.
private func probe(_ attempt: String, policy: String = "broker", debug: Bool = false, wrapper: [String] = []) async throws -> (PeerJSTesting.ExitStatus?, String) {
    let root = try ChrootDirectory()
    defer { root.remove() }
    let binary = try ServerProcess.locateBinary()
    var arguments = ["--role", "sandbox-probe", "--policy", policy, "--try", attempt, "--user", "nobody",
                     "--chroot", root.path, "--log-level", "info"]
    if debug { arguments.append("--sandbox-debug") }
    let child = wrapper.isEmpty
        ? try ChildProcess(binary, arguments) : try ChildProcess(wrapper[0], Array(wrapper.dropFirst()) + [binary] + arguments)
    let end = await child.wait(timeout: .seconds(30))
    return (end, child.output)
}

/// What the policy says must happen to `name`: its errno for a soft denial, else SIGSYS.
private func expectedEnd(of name: String) -> PeerJSTesting.ExitStatus {
    if case .errno(let value) = SeccompPolicy.broker.rule(name)?.action { return .exited(value) }
    return .signaled(SIGSYS)
}

@Suite("Sandbox, in the real binary", .serialized)
struct SandboxProcessTests {
    @Test("auth helper sandbox: every must-refuse call dies of SIGSYS (clone3: ENOSYS); no socket, no exec, no write-open",
          arguments: SeccompPolicy.auth.mustRefuse.map(\.name) + ["open-write"])
    func authMustRefuse(name: String) async throws {
        let (end, output) = try await probe(name, policy: "auth")
        let expected: PeerJSTesting.ExitStatus
        if case .errno(let value) = SeccompPolicy.auth.rule(name)?.action { expected = .exited(value) } else { expected = .signaled(SIGSYS) }
        #expect(end == expected, "\(name): \(output)")
    }

    @Test("cluster role sandbox: every must-refuse call dies (no bind, listen, accept, exec, files), nor may it make AF_UNIX or netlink sockets or handle any signal but SIGPIPE",
          arguments: SeccompPolicy.cluster.mustRefuse.map(\.name) + ["socket-unix", "socket-netlink", "rt_sigaction-int"])
    func clusterMustRefuse(name: String) async throws {
        let (end, output) = try await probe(name, policy: "cluster")
        let expected: PeerJSTesting.ExitStatus
        if case .errno(let value) = SeccompPolicy.cluster.rule(name)?.action { expected = .exited(value) } else { expected = .signaled(SIGSYS) }
        #expect(end == expected, "\(name): \(output)")
    }

    @Test("auth helper sandbox baseline (allocation, poll, sleep, a read-only open) exits 0")
    func authBaseline() async throws {
        let (end, output) = try await probe("baseline", policy: "auth")
        #expect(end == .exited(0), "\(output)")
        #expect(output.contains("probe: baseline passed"))
        if geteuid() == 0 { #expect(output.contains("uid 65534"), "\(output)") }
    }

    @Test("every must-refuse call dies of SIGSYS (or gets its soft-denial errno) in the broker's sandbox",
          arguments: SeccompPolicy.broker.mustRefuse.map(\.name))
    func mustRefuse(name: String) async throws {
        let (end, output) = try await probe(name)
        #expect(end == expectedEnd(of: name), "\(name): \(output)")
    }

    @Test("a hand-off into a full descriptor table is one lost descriptor, and the channel goes on (issue 15)")
    func lostDescriptor() async throws {
        let (end, output) = try await probe("lost-descriptor")
        #expect(end == .exited(0), "\(output)")
    }

    @Test("every soft denial returns its errno and the process lives on",
          arguments: SeccompPolicy.broker.rules.filter { !$0.action.allows }.map(\.name))
    func softDenial(name: String) async throws {
        let (end, output) = try await probe(name)
        #expect(end == expectedEnd(of: name), "\(name): \(output)")
    }

    @Test("argument filters: clone without CLONE_THREAD, mmap/mprotect with PROT_EXEC die of SIGSYS",
          arguments: ["clone", "mmap-exec", "mprotect-exec"])
    func argumentFilters(attempt: String) async throws {
        let (end, output) = try await probe(attempt)
        #expect(end == .signaled(SIGSYS), "\(attempt): \(output)")
    }

    @Test("argument filters (issue 16 item 6): setsockopt TCP_ULP \"tls\", setsockopt SOL_TLS, getsockopt TCP_INFO, prlimit64 on another pid die of SIGSYS",
          arguments: ["setsockopt-ulp", "setsockopt-tls", "getsockopt-info", "prlimit64-other"])
    func optionFilters(attempt: String) async throws {
        let (end, output) = try await probe(attempt)
        #expect(end == .signaled(SIGSYS), "\(attempt): \(output)")
    }

    @Test("the argument forms the broker makes still run: setsockopt TCP_NODELAY, getsockopt SO_ERROR, prlimit64(0, RLIMIT_NOFILE)",
          arguments: ["setsockopt-nodelay", "getsockopt-error", "prlimit64-self"])
    func allowedOptionForms(attempt: String) async throws {
        let (end, output) = try await probe(attempt)
        #expect(end == .exited(200), "\(attempt): \(output)")
    }

    @Test("a system call through another ABI (i386 int 0x80, x32) kills the whole process, not only the calling thread (the event loop threads run)",
          arguments: ["i386-syscall", "x32-syscall"])
    func badArchitecture(attempt: String) async throws {
        #if arch(x86_64)
        let (end, output) = try await probe(attempt)
        #expect(end == .signaled(SIGSYS), "\(attempt): \(output)")
        #endif
    }

    @Test("baseline (allocation, pthreads, timers, sleep, socketpair I/O, HTTP through NIO) exits 0 in the sandbox")
    func baseline() async throws {
        let (end, output) = try await probe("baseline")
        #expect(end == .exited(0), "\(output)")
        #expect(output.contains("probe: baseline passed"))
        if geteuid() == 0 { #expect(output.contains("uid 65534"), "\(output)") }
    }

    @Test("baseline as an ordinary user: chroot and user change skipped with one line, seccomp still on",
          .enabled(if: geteuid() != 0 || hasSetpriv, "as root it needs setpriv to become an ordinary user"))
    func baselineUnprivileged() async throws {
        let wrapper = geteuid() == 0
            ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"] : []
        let (end, output) = try await probe("baseline", wrapper: wrapper)
        #expect(end == .exited(0), "\(output)")
        #expect(output.components(separatedBy: "not privileged").count == 2, "\(output)")
        let (refused, _) = try await probe("socket", wrapper: wrapper)
        #expect(refused == .signaled(SIGSYS))
    }

    @Test("--sandbox-debug names the forbidden call on stderr, then the process dies of SIGSYS")
    func debugMode() async throws {
        let (end, output) = try await probe("ptrace", debug: true)
        #expect(end == .signaled(SIGSYS))
        let number = try #require(SeccompFilter.number(of: "ptrace"))
        #expect(output.contains("forbidden system call \(number) (ptrace)"), "\(output)")
        let (baselineEnd, baselineOutput) = try await probe("baseline", debug: true)
        #expect(baselineEnd == .exited(0), "\(baselineOutput)")
    }
}

/// Whether `setpriv` (util-linux) is there to start a program as another user.
private let hasSetpriv = access("/usr/bin/setpriv", X_OK) == 0
/// Root, to start a program as `nobody` with chosen capabilities through `setpriv`.
private let rootWithSetpriv = geteuid() == 0 && hasSetpriv
private let needsRootAndSetpriv: Comment = "needs root and /usr/bin/setpriv"

/// `setpriv` options that start a program as `nobody` holding `capabilities` (setpriv's names,
/// e.g. `+setuid`) as ambient capabilities, as systemd's AmbientCapabilities= would.
private func asNobody(holding capabilities: [String]) -> [String] {
    let list = capabilities.joined(separator: ",")
    return ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "--inh-caps=\(list)", "--ambient-caps=\(list)"]
}

/// A server started as `nobody` holding `capabilities` (ambient), with a users file so that the
/// auth helper runs too; returns once both have said they are ready. Remove `directory` after.
private struct NobodyServer {
    let child: ChildProcess
    let directory: URL
    let text: String
    let broker: pid_t
    let helper: pid_t

    init(holding capabilities: [String], name: String) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("peerjs-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        chmod(directory.path, 0o755)
        let users = directory.appendingPathComponent("users").path
        try "u1 t1\n".write(toFile: users, atomically: false, encoding: .utf8)
        chmod(users, 0o644)
        let wrapper = asNobody(holding: capabilities)
        child = try ChildProcess(wrapper[0], Array(wrapper.dropFirst()) + [try ServerProcess.locateBinary(), "--host", "127.0.0.1", "--port", "0",
                                                                    "--auth-users", users, "--log-level", "info"])
        let text: String
        do {
            text = try await child.waitForLines(containing: ["auth helper ready", "Started PeerServer"])
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        guard let broker = number(after: "broker started pid=", in: text), let helper = number(after: "auth helper started pid=", in: text) else {
            throw HarnessError("no pids in the start-up lines: \(text)")
        }
        self.text = text
        self.broker = pid_t(broker)
        self.helper = pid_t(helper)
    }
}

/// The capability sets of every thread of `pid`: thread id → field (CapInh, CapPrm, CapEff,
/// CapBnd, CapAmb) → value.
private func threadCapabilities(_ pid: pid_t) -> [String: [String: String]] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    var result: [String: [String: String]] = [:]
    for task in tasks {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("Cap") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        result[task] = fields
    }
    return result
}

@Suite("Privilege drop fails closed (issue 16 item 3)", .serialized)
struct PrivilegeDropProcessTests {
    @Test("a broker that can drop privileges refuses to run when its chroot directory is missing (it used to skip the drop and run as its starter)",
          .enabled(if: try PrivilegeDrop.canDrop(capabilities: PrivilegeDrop.effectiveCapabilities()), "needs privileges to drop"))
    func missingChrootRefusedByBroker() async throws {
        let missing = "/tmp/peerjs-no-such-chroot-\(getpid())"
        let child = try ChildProcess(try ServerProcess.locateBinary(), ["--role", "sandbox-probe", "--try", "baseline", "--user", "nobody",
                                                   "--chroot", missing, "--log-level", "info"])
        let end = await child.wait(timeout: .seconds(30))
        let output = child.output
        #expect(end == .exited(3), "\(output)")
        #expect(output.contains("the chroot directory \(missing) does not exist"), "\(output)")
        #expect(output.contains("refuses to run the broker unconfined"), "\(output)")
        #expect(!output.contains("probe: baseline passed"), "\(output)")
        #expect(access(missing, F_OK) != 0)
    }

    @Test("a supervisor holding CAP_SETUID + CAP_SYS_CHROOT (not root, as under systemd) refuses to start without its chroot directory",
          .enabled(if: rootWithSetpriv, needsRootAndSetpriv))
    func missingChrootRefusedBySupervisor() async throws {
        let missing = "/tmp/peerjs-no-such-chroot-\(getpid())"
        let wrapper = asNobody(holding: ["+setuid", "+setgid", "+sys_chroot"])
        let child = try ChildProcess(wrapper[0], Array(wrapper.dropFirst()) + [try ServerProcess.locateBinary(), "--host", "127.0.0.1", "--port", "0",
                                                                        "--user", "nobody", "--chroot", missing])
        let end = await child.wait(timeout: .seconds(20))
        let output = child.output
        #expect(end != nil && end != .exited(0), "\(output)")
        #expect(output.contains("the chroot directory \(missing) does not exist"), "\(output)")
        #expect(!output.contains("Started PeerServer"), "\(output)")
        #expect(!output.contains("broker started"), "\(output)")
    }

    @Test("nothing to drop (an ordinary user holding CAP_NET_BIND_SERVICE and CAP_SETPCAP): every thread of the broker and the auth helper has empty capability sets, bounding set included",
          .enabled(if: rootWithSetpriv, needsRootAndSetpriv))
    func capabilitiesEmptyInEveryThread() async throws {
        let server = try await NobodyServer(holding: ["+net_bind_service", "+setpcap"], name: "caps")
        defer { try? FileManager.default.removeItem(at: server.directory) }
        let (child, text, broker, helper) = (server.child, server.text, server.broker, server.helper)
        // The supervisor keeps what it was given (its own business); its children hold nothing.
        #expect(procStatus(child.pid)["CapEff"] == "0000000000000500", "\(procStatus(child.pid))")
        for (role, pid) in [("broker", broker), ("auth helper", helper)] {
            let threads = threadCapabilities(pid)
            if role == "broker" { #expect(threads.count >= 2, "the broker's event loop thread is missing: \(threads)") }
            for (thread, sets) in threads {
                for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                    #expect(sets[field] == "0000000000000000", "\(role) thread \(thread): \(field) \(sets[field] ?? "?")")
                }
            }
            #expect(procStatus(pid)["Seccomp"] == "2")
        }
        #expect(text.contains("capabilities dropped in every thread"), "\(text)")
        child.signal(SIGTERM)
        #expect(await child.wait(timeout: .seconds(20)) == .exited(0), "\(child.output)")
    }

    @Test("nothing to drop (an ordinary user, no capabilities): another process of that user can read neither the supervisor's, the broker's nor the auth helper's /proc/PID/environ (not dumpable; a policy program of that user could before)",
          .enabled(if: rootWithSetpriv, needsRootAndSetpriv))
    func sameUserCannotInspect() async throws {
        let server = try await NobodyServer(holding: ["-all"], name: "dump")
        defer { try? FileManager.default.removeItem(at: server.directory) }
        let (child, broker, helper) = (server.child, server.broker, server.helper)
        let nobody = asNobody(holding: ["-all"])
        // The control: a process of the same user that is dumpable can be read, so a refusal
        // below is the flag's doing and not the reader's.
        let control = try ChildProcess(nobody[0], Array(nobody.dropFirst()) + ["/bin/sleep", "30"])
        for (role, pid) in [("supervisor", child.pid), ("broker", broker), ("auth helper", helper), ("control", control.pid)] {
            let reader = try ChildProcess(nobody[0], Array(nobody.dropFirst()) + ["/bin/cat", "/proc/\(pid)/environ"])
            let end = await reader.wait(timeout: .seconds(20))
            if role == "control" {
                #expect(end == .exited(0), "the control read failed: \(reader.output)")
            } else {
                #expect(end != .exited(0), "a process of the same user read the \(role)'s environment")
                #expect(reader.output.contains("Permission denied"), "\(role): \(reader.output)")
            }
        }
        control.signal(SIGKILL)
        _ = await control.wait(timeout: .seconds(5))
        child.signal(SIGTERM)
        #expect(await child.wait(timeout: .seconds(20)) == .exited(0), "\(child.output)")
    }

    @Test("a chroot path that is a symlink to another directory is refused, and the target's mode and owner are not changed (also when it dangles)",
          .enabled(if: geteuid() == 0, "chown and the drop need root"))
    func symlinkChrootRefused() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("peerjs-link-\(UUID().uuidString)").path
        mkdir(base, 0o755)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let target = base + "/target"
        mkdir(target, 0o755)
        chmod(target, 0o755)
        chown(target, 65534, 65534)
        for (link, pointsTo) in [(base + "/link", target), (base + "/dangling", base + "/nothing")] {
            symlink(pointsTo, link)
            let child = try ChildProcess(try ServerProcess.locateBinary(), ["--host", "127.0.0.1", "--port", "0", "--user", "nobody", "--chroot", link])
            let end = await child.wait(timeout: .seconds(20))
            let output = child.output
            #expect(end != nil && end != .exited(0), "\(output)")
            #expect(output.contains("is a symbolic link"), "\(output)")
            #expect(!output.contains("broker started"), "\(output)")
            var info = stat()
            #expect(lstat(link, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK, "\(link) is no longer a symlink")
        }
        var info = stat()
        #expect(stat(target, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o755, "target mode \(String(info.st_mode & 0o7777, radix: 8))")
        #expect(info.st_uid == 65534 && info.st_gid == 65534)
        #expect(access(base + "/nothing", F_OK) != 0, "the dangling link's target was created")
    }
}

/// The whole server (supervisor + sandboxed broker) on 127.0.0.1 with an ephemeral port.
private final class RunningServer {
    let child: ChildProcess
    let root: ChrootDirectory
    let port: Int
    let brokerPID: pid_t

    init(extra: [String] = []) async throws {
        root = try ChrootDirectory()
        child = try ChildProcess(try ServerProcess.locateBinary(), ["--host", "127.0.0.1", "--port", "0", "--user", "nobody",
                                               "--chroot", root.path, "--log-level", "info"] + extra)
        let text: String
        do {
            text = try await child.waitForLines(containing: ["Started PeerServer", "broker started pid="])
        } catch {
            root.remove()
            throw error
        }
        guard let port = number(after: "port: ", in: text), let pid = number(after: "broker started pid=", in: text) else {
            throw HarnessError("no port or broker pid in the start-up lines: \(text)")
        }
        self.port = port
        brokerPID = pid_t(pid)
    }

    /// SIGTERM, then the supervisor's exit (bounded).
    func stop() async -> PeerJSTesting.ExitStatus? {
        child.signal(SIGTERM)
        let end = await child.wait(timeout: .seconds(15))
        root.remove()
        return end
    }
}

@Suite("Sandboxed broker in the running server", .serialized)
struct SandboxedServerTests {
    @Test("/proc/<broker>/status: Seccomp 2, NoNewPrivs 1, CapEff 0; as root also non-zero uid/gid and an empty root")
    func brokerStatus() async throws {
        let server = try await RunningServer()
        let status = procStatus(server.brokerPID)
        #expect(status["Seccomp"] == "2", "\(status)")
        #expect(status["NoNewPrivs"] == "1")
        #expect(status["CapEff"] == "0000000000000000")
        #expect(status["CapPrm"] == "0000000000000000")
        // Locked memory is capped (issue 16 review): the broker may mlock its TLS key, no more.
        let limits = (try? String(contentsOfFile: "/proc/\(server.brokerPID)/limits", encoding: .utf8)) ?? ""
        let locked = limits.split(separator: "\n").first { $0.hasPrefix("Max locked memory") }?
            .split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2).compactMap { UInt64($0) } ?? []
        #expect(locked.count == 2 && locked.allSatisfy { $0 <= PrivilegeDrop.lockedMemoryLimit }, "Max locked memory: \(locked)")
        if geteuid() == 0 {
            let uids = status["Uid"]?.split(whereSeparator: \.isWhitespace) ?? []
            let gids = status["Gid"]?.split(whereSeparator: \.isWhitespace) ?? []
            #expect(uids.count == 4 && uids.allSatisfy { $0 != "0" }, "Uid: \(uids)")
            #expect(gids.count == 4 && gids.allSatisfy { $0 != "0" }, "Gid: \(gids)")
            let entries = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.brokerPID)/root")
            #expect(entries.isEmpty, "broker root holds \(entries)")
            let root = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server.brokerPID)/root")
            #expect(root == server.root.path)
            #expect(server.child.output.contains("sandbox: chroot \(server.root.path), uid 65534 gid 65534"))
        }
        #expect(await server.stop() == .exited(0), "\(server.child.output)")
    }

    @Test("a whole PeerJS session (OPEN, OFFER, ANSWER, CANDIDATE, LEAVE) under the filter; the broker drains and exits 0")
    func session() async throws {
        let server = try await RunningServer()
        let alice = try await WSClient.connect(port: server.port, query: "key=peerjs&id=alice&token=ta&version=1.5.4")
        #expect(try await alice.nextJSON()["type"] == "OPEN")
        let bob = try await WSClient.connect(port: server.port, query: "key=peerjs&id=bob&token=tb&version=1.5.4")
        #expect(try await bob.nextJSON()["type"] == "OPEN")

        try await alice.sendText(#"{"type":"OFFER","dst":"bob","payload":{"sdp":{"type":"offer","sdp":"v=0"},"type":"data","connectionId":"dc_1"}}"#)
        let offer = try await bob.nextJSON()
        #expect(offer["type"] == "OFFER")
        #expect(offer["src"] == "alice")
        #expect(offer["payload"]?["connectionId"] == "dc_1")

        try await bob.sendText(#"{"type":"ANSWER","dst":"alice","payload":{"sdp":{"type":"answer","sdp":"v=0"},"type":"data","connectionId":"dc_1"}}"#)
        let answer = try await alice.nextJSON()
        #expect(answer["type"] == "ANSWER")
        #expect(answer["src"] == "bob")

        try await alice.sendText(#"{"type":"CANDIDATE","dst":"bob","payload":{"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"},"type":"data","connectionId":"dc_1"}}"#)
        let candidate = try await bob.nextJSON()
        #expect(candidate["type"] == "CANDIDATE")
        #expect(candidate["src"] == "alice")

        try await alice.sendText(#"{"type":"LEAVE","dst":"bob"}"#)
        let leave = try await bob.nextJSON()
        #expect(leave["type"] == "LEAVE")
        #expect(leave["src"] == "alice")

        #expect(procStatus(server.brokerPID)["Seccomp"] == "2")
        #expect(kill(server.brokerPID, 0) == 0, "the broker died: \(server.child.output)")
        let end = await server.stop()
        let log = server.child.output
        #expect(end == .exited(0), "\(log)")
        #expect(!log.contains("killed by signal"), "\(log)")
        #expect(log.contains("broker pid=\(server.brokerPID) exited with status 0"), "\(log)")
    }

    @Test("stderr appended to a regular file: the broker's and the auth helper's lines reach it (through the supervisor; with RLIMIT_FSIZE 0 their own writes would fail)")
    func stderrToFile() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("peerjs-stderr-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        chmod(directory.path, 0o755)
        defer { try? FileManager.default.removeItem(at: directory) }
        let users = directory.appendingPathComponent("users").path
        try "u1 t1\n".write(toFile: users, atomically: false, encoding: .utf8)
        chmod(users, 0o644)
        let log = directory.appendingPathComponent("peerjs.log").path
        var arguments = ["--host", "127.0.0.1", "--port", "0", "--log-level", "info", "--auth-users", users]
        var root: ChrootDirectory?
        if geteuid() == 0 {
            root = try ChrootDirectory()
            arguments += ["--user", "nobody", "--auth-user", "nobody", "--chroot", root!.path]
        }
        defer { root?.remove() }
        let child = try ChildProcess(try ServerProcess.locateBinary(), arguments, stderrFile: log)
        var text = ""
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if text.contains("peerjs[broker] info: auth helper connected") && text.contains("peerjs[auth] info: auth helper ready") { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        child.signal(SIGTERM)
        #expect(await child.wait(timeout: .seconds(20)) == .exited(0))
        text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(text.contains("peerjs[broker] info: sandbox:"), "\(text)")
        #expect(text.contains("peerjs[broker] info: auth helper connected"), "\(text)")
        #expect(text.contains("peerjs[auth] info: auth helper ready"), "\(text)")
        #expect(text.hasSuffix("peerjs[supervisor] notice: stopped\n"), "\(text)")
    }

    @Test("a missing --user or --auth-user is refused by the supervisor naming whose user and the flag (when it could drop)",
          .enabled(if: geteuid() == 0, "the user check runs only when the supervisor can drop"),
          arguments: [
              (["--user", "peerjs-no-such-user"], "the broker's user", "--user"),
              (["--user", "nobody", "--auth-users", "/dev/null", "--auth-user", "peerjs-no-such-user"], "the auth helper's user", "--auth-user"),
          ])
    func missingUser(flags: [String], whose: String, option: String) async throws {
        let root = try ChrootDirectory()
        defer { root.remove() }
        let child = try ChildProcess(try ServerProcess.locateBinary(), ["--host", "127.0.0.1", "--port", "0", "--chroot", root.path] + flags)
        let end = await child.wait(timeout: .seconds(20))
        #expect(end != nil && end != .exited(0))
        let output = child.output
        #expect(output.contains("\(whose) \"peerjs-no-such-user\" does not exist"), "\(output)")
        #expect(output.contains("another unprivileged user with \(option)"), "\(output)")
    }

    @Test("as root with the default users (_peerjs, _peerjs-auth, made by scripts/setup.sh) and no --user: the broker runs as _peerjs, the auth helper as _peerjs-auth (issue 16 item 9)",
          .enabled(if: geteuid() == 0 && getpwnam("_peerjs") != nil && getpwnam("_peerjs-auth") != nil,
                   "needs root and the users scripts/setup.sh makes"))
    func defaultUsers() async throws {
        let broker = try #require(getpwnam("_peerjs")).pointee.pw_uid
        let helper = try #require(getpwnam("_peerjs-auth")).pointee.pw_uid
        let root = try ChrootDirectory()
        defer { root.remove() }
        let child = try ChildProcess(try ServerProcess.locateBinary(), ["--host", "127.0.0.1", "--port", "0", "--chroot", root.path,
                                                  "--auth-users", "/dev/null", "--log-level", "info"])
        let text = try await child.waitForLines(containing: ["auth helper ready", "Started PeerServer"])
        guard let brokerPID = number(after: "broker started pid=", in: text), let helperPID = number(after: "auth helper started pid=", in: text) else {
            throw HarnessError("no pids in the start-up lines: \(text)")
        }
        for (pid, uid) in [(brokerPID, broker), (helperPID, helper)] {
            let uids = procStatus(pid_t(pid))["Uid"]?.split(whereSeparator: \.isWhitespace).map(String.init) ?? []
            #expect(uids == Array(repeating: String(uid), count: 4), "pid \(pid): Uid \(uids), want \(uid)")
        }
        #expect(text.contains("sandbox: chroot \(root.path), uid \(broker) "), "\(text)")
        child.signal(SIGTERM)
        #expect(await child.wait(timeout: .seconds(20)) == .exited(0), "\(child.output)")
    }

    @Test("a chroot directory that is not empty is refused by the supervisor, saying how to fix it",
          .enabled(if: geteuid() == 0, "the chroot check runs only when the supervisor can drop"))
    func nonEmptyChroot() async throws {
        let root = try ChrootDirectory()
        chmod(root.path, 0o755)
        let stray = root.path + "/stray"
        mkdir(stray, 0o755)
        defer { rmdir(stray); root.remove() }
        let child = try ChildProcess(try ServerProcess.locateBinary(), ["--host", "127.0.0.1", "--port", "0", "--user", "nobody",
                                                  "--chroot", root.path])
        let end = await child.wait(timeout: .seconds(20))
        #expect(end != nil && end != .exited(0))
        #expect(child.output.contains("is not empty (it holds stray)"), "\(child.output)")
    }
}
