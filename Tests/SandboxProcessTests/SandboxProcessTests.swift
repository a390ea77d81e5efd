import Foundation
import Glibc
import Sandbox
import Testing

/// Runs `peerjs --role sandbox-probe` (the broker's event loop, the broker's sandbox, then one
/// call) as the tests' own user; when that is root the probe drops to `nobody` in a fresh chroot.
private func probe(_ attempt: String, policy: String = "broker", debug: Bool = false, wrapper: [String] = []) throws -> (Termination?, String) {
    let root = try ChrootDirectory()
    defer { root.remove() }
    let binary = try peerjsBinary()
    var arguments = ["--role", "sandbox-probe", "--policy", policy, "--try", attempt, "--user", "nobody",
                     "--chroot", root.path, "--log-level", "info"]
    if debug { arguments.append("--sandbox-debug") }
    let child = wrapper.isEmpty ? try Child(binary, arguments) : try Child(wrapper[0], Array(wrapper.dropFirst()) + [binary] + arguments)
    let end = child.wait(seconds: 30)
    return (end, child.output.contents)
}

/// What the policy says must happen to `name`: its errno for a soft denial, else SIGSYS.
private func expectedEnd(of name: String) -> Termination {
    if case .errno(let value) = SeccompPolicy.broker.rule(name)?.action { return .exited(value) }
    return .signalled(SIGSYS)
}

@Suite("Sandbox, in the real binary", .serialized)
struct SandboxProcessTests {
    @Test("auth helper sandbox: every must-refuse call dies of SIGSYS (clone3: ENOSYS); no socket, no exec, no write-open",
          arguments: SeccompPolicy.auth.mustRefuse.map(\.name) + ["open-write"])
    func authMustRefuse(name: String) throws {
        let (end, output) = try probe(name, policy: "auth")
        let expected: Termination
        if case .errno(let value) = SeccompPolicy.auth.rule(name)?.action { expected = .exited(value) } else { expected = .signalled(SIGSYS) }
        #expect(end == expected, "\(name): \(output)")
    }

    @Test("auth helper sandbox baseline (allocation, poll, sleep, a read-only open) exits 0")
    func authBaseline() throws {
        let (end, output) = try probe("baseline", policy: "auth")
        #expect(end == .exited(0), "\(output)")
        #expect(output.contains("probe: baseline passed"))
        if geteuid() == 0 { #expect(output.contains("uid 65534"), "\(output)") }
    }

    @Test("every must-refuse call dies of SIGSYS (or gets its soft-denial errno) in the broker's sandbox",
          arguments: SeccompPolicy.broker.mustRefuse.map(\.name))
    func mustRefuse(name: String) throws {
        let (end, output) = try probe(name)
        #expect(end == expectedEnd(of: name), "\(name): \(output)")
    }

    @Test("a hand-off into a full descriptor table is one lost descriptor, and the channel goes on (issue 15)")
    func lostDescriptor() throws {
        let (end, output) = try probe("lost-descriptor")
        #expect(end == .exited(0), "\(output)")
    }

    @Test("every soft denial returns its errno and the process lives on",
          arguments: SeccompPolicy.broker.rules.filter { !$0.action.allows }.map(\.name))
    func softDenial(name: String) throws {
        let (end, output) = try probe(name)
        #expect(end == expectedEnd(of: name), "\(name): \(output)")
    }

    @Test("argument filters: clone without CLONE_THREAD, mmap/mprotect with PROT_EXEC die of SIGSYS",
          arguments: ["clone", "mmap-exec", "mprotect-exec"])
    func argumentFilters(attempt: String) throws {
        let (end, output) = try probe(attempt)
        #expect(end == .signalled(SIGSYS), "\(attempt): \(output)")
    }

    @Test("baseline (allocation, pthreads, timers, sleep, socketpair I/O, HTTP through NIO) exits 0 in the sandbox")
    func baseline() throws {
        let (end, output) = try probe("baseline")
        #expect(end == .exited(0), "\(output)")
        #expect(output.contains("probe: baseline passed"))
        if geteuid() == 0 { #expect(output.contains("uid 65534"), "\(output)") }
    }

    @Test("baseline as an ordinary user: chroot and user change skipped with one line, seccomp still on")
    func baselineUnprivileged() throws {
        let wrapper = geteuid() == 0
            ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"] : []
        if !wrapper.isEmpty && access(wrapper[0], X_OK) != 0 { return }
        let (end, output) = try probe("baseline", wrapper: wrapper)
        #expect(end == .exited(0), "\(output)")
        #expect(output.components(separatedBy: "not privileged").count == 2, "\(output)")
        let (refused, _) = try probe("socket", wrapper: wrapper)
        #expect(refused == .signalled(SIGSYS))
    }

    @Test("--sandbox-debug names the forbidden call on stderr, then the process dies of SIGSYS")
    func debugMode() throws {
        let (end, output) = try probe("ptrace", debug: true)
        #expect(end == .signalled(SIGSYS))
        let number = try #require(SeccompFilter.number(of: "ptrace"))
        #expect(output.contains("forbidden system call \(number) (ptrace)"), "\(output)")
        let (baselineEnd, baselineOutput) = try probe("baseline", debug: true)
        #expect(baselineEnd == .exited(0), "\(baselineOutput)")
    }
}

/// The whole server (supervisor + sandboxed broker) on 127.0.0.1 with an ephemeral port.
private final class RunningServer {
    let child: Child
    let root: ChrootDirectory
    let port: Int
    let brokerPID: pid_t

    init(extra: [String] = []) throws {
        root = try ChrootDirectory()
        child = try Child(try peerjsBinary(), ["--host", "127.0.0.1", "--port", "0", "--user", "nobody",
                                               "--chroot", root.path, "--log-level", "info"] + extra)
        guard let text = child.output.wait(seconds: 30, until: { $0.contains("Started PeerServer") && $0.contains("\n") }),
              let port = number(after: "port: ", in: text), let pid = number(after: "broker started pid=", in: text)
        else {
            _ = child.wait(seconds: 0)
            root.remove()
            throw TestFailure("the server did not start: \(child.output.contents)")
        }
        self.port = port
        brokerPID = pid_t(pid)
    }

    /// SIGTERM, then the supervisor's exit (bounded).
    func stop() -> Termination? {
        child.signal(SIGTERM)
        let end = child.wait(seconds: 15)
        root.remove()
        return end
    }
}

@Suite("Sandboxed broker in the running server", .serialized)
struct SandboxedServerTests {
    @Test("/proc/<broker>/status: Seccomp 2, NoNewPrivs 1, CapEff 0; as root also non-zero uid/gid and an empty root")
    func brokerStatus() throws {
        let server = try RunningServer()
        let status = procStatus(server.brokerPID)
        #expect(status["Seccomp"] == "2", "\(status)")
        #expect(status["NoNewPrivs"] == "1")
        #expect(status["CapEff"] == "0000000000000000")
        #expect(status["CapPrm"] == "0000000000000000")
        if geteuid() == 0 {
            let uids = status["Uid"]?.split(whereSeparator: \.isWhitespace) ?? []
            let gids = status["Gid"]?.split(whereSeparator: \.isWhitespace) ?? []
            #expect(uids.count == 4 && uids.allSatisfy { $0 != "0" }, "Uid: \(uids)")
            #expect(gids.count == 4 && gids.allSatisfy { $0 != "0" }, "Gid: \(gids)")
            let entries = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.brokerPID)/root")
            #expect(entries.isEmpty, "broker root holds \(entries)")
            let root = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server.brokerPID)/root")
            #expect(root == server.root.path)
            #expect(server.child.output.contents.contains("sandbox: chroot \(server.root.path), uid 65534 gid 65534"))
        }
        #expect(server.stop() == .exited(0), "\(server.child.output.contents)")
    }

    @Test("a whole PeerJS session (OPEN, OFFER, ANSWER, CANDIDATE, LEAVE) under the filter; the broker drains and exits 0")
    func session() throws {
        let server = try RunningServer()
        let alice = try RawWebSocket(port: server.port, path: "/peerjs?key=peerjs&id=alice&token=ta&version=1.5.4")
        #expect(try alice.receiveJSON()["type"] as? String == "OPEN")
        let bob = try RawWebSocket(port: server.port, path: "/peerjs?key=peerjs&id=bob&token=tb&version=1.5.4")
        #expect(try bob.receiveJSON()["type"] as? String == "OPEN")

        try alice.sendText(#"{"type":"OFFER","dst":"bob","payload":{"sdp":{"type":"offer","sdp":"v=0"},"type":"data","connectionId":"dc_1"}}"#)
        let offer = try bob.receiveJSON()
        #expect(offer["type"] as? String == "OFFER")
        #expect(offer["src"] as? String == "alice")
        #expect((offer["payload"] as? [String: Any])?["connectionId"] as? String == "dc_1")

        try bob.sendText(#"{"type":"ANSWER","dst":"alice","payload":{"sdp":{"type":"answer","sdp":"v=0"},"type":"data","connectionId":"dc_1"}}"#)
        let answer = try alice.receiveJSON()
        #expect(answer["type"] as? String == "ANSWER")
        #expect(answer["src"] as? String == "bob")

        try alice.sendText(#"{"type":"CANDIDATE","dst":"bob","payload":{"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"},"type":"data","connectionId":"dc_1"}}"#)
        let candidate = try bob.receiveJSON()
        #expect(candidate["type"] as? String == "CANDIDATE")
        #expect(candidate["src"] as? String == "alice")

        try alice.sendText(#"{"type":"LEAVE","dst":"bob"}"#)
        let leave = try bob.receiveJSON()
        #expect(leave["type"] as? String == "LEAVE")
        #expect(leave["src"] as? String == "alice")

        #expect(procStatus(server.brokerPID)["Seccomp"] == "2")
        #expect(kill(server.brokerPID, 0) == 0, "the broker died: \(server.child.output.contents)")
        let end = server.stop()
        let log = server.child.output.contents
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
        let child = try Child(try peerjsBinary(), arguments, stderrFile: log)
        var text = ""
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if text.contains("peerjs[broker] info: auth helper connected") && text.contains("peerjs[auth] info: auth helper ready") { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        child.signal(SIGTERM)
        #expect(child.wait(seconds: 20) == .exited(0))
        text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(text.contains("peerjs[broker] info: sandbox:"), "\(text)")
        #expect(text.contains("peerjs[broker] info: auth helper connected"), "\(text)")
        #expect(text.contains("peerjs[auth] info: auth helper ready"), "\(text)")
        #expect(text.hasSuffix("peerjs[supervisor] notice: stopped\n"), "\(text)")
    }

    @Test("a missing --user or --auth-user is refused by the supervisor naming whose user and the flag (when it could drop)",
          arguments: [
              (["--user", "peerjs-no-such-user"], "the broker's user", "--user"),
              (["--user", "nobody", "--auth-users", "/dev/null", "--auth-user", "peerjs-no-such-user"], "the auth helper's user", "--auth-user"),
          ])
    func missingUser(flags: [String], whose: String, option: String) throws {
        guard geteuid() == 0 else { return }
        let root = try ChrootDirectory()
        defer { root.remove() }
        let child = try Child(try peerjsBinary(), ["--host", "127.0.0.1", "--port", "0", "--chroot", root.path] + flags)
        let end = child.wait(seconds: 20)
        #expect(end != nil && end != .exited(0))
        let output = child.output.contents
        #expect(output.contains("\(whose) \"peerjs-no-such-user\" does not exist"), "\(output)")
        #expect(output.contains("another unprivileged user with \(option)"), "\(output)")
    }

    @Test("a chroot directory that is not empty is refused by the supervisor, saying how to fix it")
    func nonEmptyChroot() throws {
        guard geteuid() == 0 else { return }
        let root = try ChrootDirectory()
        chmod(root.path, 0o755)
        let stray = root.path + "/stray"
        mkdir(stray, 0o755)
        defer { rmdir(stray); root.remove() }
        let child = try Child(try peerjsBinary(), ["--host", "127.0.0.1", "--port", "0", "--user", "nobody",
                                                  "--chroot", root.path])
        let end = child.wait(seconds: 20)
        #expect(end != nil && end != .exited(0))
        #expect(child.output.contents.contains("is not empty (it holds stray)"), "\(child.output.contents)")
    }
}
