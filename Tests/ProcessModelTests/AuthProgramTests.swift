import Foundation
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

private func errorFrame(_ text: String) -> JSONValue { ["type": "ERROR", "payload": ["msg": .string(text)]] }

/// The policy program (`--auth-program`): `examples/auth-policy.py`, spoken to in JSON lines by
/// the auth helper. Behaviours 61, 62 and 65 (the fork's auth and key functions).
@Suite("Auth policy program", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct AuthProgramTests {
    /// `examples/auth-policy.py` in this package (found from this source file's path).
    static var example: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/auth-policy.py").path
    }

    typealias T = AuthHelperProcessTests

    @Test("61 the program receives id, token, key, ip and version; allow → OPEN; deny 'nope' → ERROR 'nope' + close")
    func program() async throws {
        try await ServerProcess.withServer(["--auth-timeout", "10000", "--auth-program", Self.example]) { server in
            let s = try T.endpoint(server)
            let mark = server.logLines.count
            #expect(try await T.attempt(s, id: "alice", token: "alice-token", extra: "&version=1.5.4") == ["type": "OPEN"])
            _ = try await server.waitForLog(from: mark, "the program's view of the query") {
                $0.contains("policy: auth id=alice key=peerjs ip=127.0.0.1 version=1.5.4 token=<11 chars>")
            }
            #expect(try await T.attempt(s, id: "alice", token: "bad") == errorFrame("nope"))
            // Events reach the program too.
            _ = try await server.waitForLog(from: mark, "the program's connection event") {
                $0.contains("policy: connection id=alice") && $0.contains("key=peerjs")
            }
        }
    }

    @Test("61b at --log-level notice (no helper log lines for events) the program still gets connection and disconnect events")
    func programEventsAtNotice() async throws {
        try await ServerProcess.withServer(["--auth-timeout", "10000", "--auth-program", Self.example, "--log-level", "notice"]) { server in
            let s = try T.endpoint(server)
            let mark = server.logLines.count
            let ws = try await s.connect(id: "bob", token: "bob-token")
            #expect(try await ws.nextJSON() == ["type": "OPEN"])
            _ = try await server.waitForLog(from: mark, "the program's connection event") {
                $0.contains("policy: connection id=bob")
            }
            await ws.close()
            _ = try await server.waitForLog(from: mark, "the program's disconnect event") {
                $0.contains("policy: disconnect id=bob")
            }
        }
    }

    @Test("62 a program that never answers → 'Auth Timeout' within the deadline; one that fails → 'Error on Auth'; the program comes back")
    func timeoutAndFailure() async throws {
        try await ServerProcess.withServer(["--auth-program", Self.example, "--auth-timeout", "3000"]) { server in
            let s = try T.endpoint(server)
            // 3 s, and the first question after "auth helper ready": the Python program must be
            // running and answer within the deadline on a loaded machine.
            try await T.waitForHelperReady(server, from: 0)
            #expect(try await T.attempt(s, id: "throw1", token: "x") == errorFrame("Error on Auth"))
            let helper = try await T.waitForHelper(server)
            let mark = server.logLines.count
            let start = Stopwatch.now
            #expect(try await T.attempt(s, id: "sleepy", token: "x") == errorFrame("Auth Timeout"))
            let elapsed = Stopwatch.milliseconds(since: start)
            #expect(elapsed >= 2900 && elapsed < 6000, "Auth Timeout after \(elapsed) ms (deadline 3000)")
            // The hung program is replaced (with its helper); the next legitimate client is admitted.
            _ = try await server.waitForLog(from: mark, "the hung helper's restart") { $0.contains("auth helper pid=\(helper)") && $0.contains("restarting it") }
            try await T.waitForHelperReady(server, from: mark)
            #expect(try await T.attempt(s, id: "bob", token: "bob-token") == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "bob", token: "wrong") == errorFrame("nope"))
        }
    }

    @Test("65 a key policy in the program: admin may use 'private' (OPEN), others get 'Invalid Key'")
    func keyPolicy() async throws {
        try await ServerProcess.withServer(["--auth-timeout", "10000", "--auth-program", Self.example, "--keys", "peerjs,private"]) { server in
            let s = try T.endpoint(server)
            #expect(try await T.attempt(s, id: "admin", token: "admin-token", key: "private") == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "alice", token: "alice-token", key: "private") == errorFrame("Invalid Key"))
            #expect(try await T.attempt(s, id: "alice", token: "alice-token", key: "peerjs") == ["type": "OPEN"])
        }
    }

    @Test("a stalled broker while the helper answers a burst: verdicts wait for room in the channel (~270 fit), none is lost, every client is admitted")
    func stalledBroker() async throws {
        let count = 400
        // Holds every answer until SIGUSR1, then allows them all at once.
        let program = try T.TempFile("""
            #!/usr/bin/env python3
            import json, os, signal, sys
            held = []
            def release(signum, frame):
                global held
                sys.stdout.write("".join('{"rid":%s,"allow":true}\\n' % json.dumps(rid) for rid in held))
                sys.stdout.flush()
                held = []
            signal.signal(signal.SIGUSR1, release)
            for line in sys.stdin:
                message = json.loads(line)
                if message["type"] == "auth":
                    held.append(message["rid"])
                    if len(held) == \(count):
                        print(f"policy: holding {len(held)} pid={os.getpid()}", file=sys.stderr, flush=True)
            """, name: "hold.py")
        chmod(program.path, 0o755)
        try await ServerProcess.withServer(["--auth-program", program.path, "--auth-timeout", "20000"]) { server in
            let s = try T.endpoint(server)
            let clients = try await T.requestUpgrades(s, (0..<count).map { ("s\($0)", "st\($0)") })
            let holding = try await server.waitForLog("the program holding every question") { $0.contains("policy: holding \(count)") }
            let programPID = try #require(holding.split(separator: "pid=").last.flatMap { Int32($0.prefix { $0.isNumber }) })
            let broker = try #require(server.brokerPID())
            kill(broker, SIGSTOP)
            try await T.waitForState(of: [broker], stopped: true)
            let mark = server.logLines.count
            kill(programPID, SIGUSR1)
            _ = try await server.waitForLog(from: mark, "the helper holding verdicts") { $0.contains("the broker is not reading its verdicts") }
            kill(broker, SIGCONT)
            await T.expectAllOpen(clients)
            #expect(!server.logLines.contains { $0.contains("could not answer the broker") })
        }
    }

    // MARK: What the program gets (issue 16, item 1)

    /// Reports, on its stderr, the descriptors it holds (fstat of 0..<4096, which opens
    /// nothing), the names in its environment as it was started (/proc/self/environ, before
    /// Python's own locale coercion), its session, process group and controlling terminal; then
    /// writes a line holding a CR, an ESC and `<0>`; then reads its questions without answering.
    static let inspector = #"""
        #!/usr/bin/env python3
        import errno, os, sys
        fds = []
        for fd in range(4096):
            try:
                os.fstat(fd)
                fds.append(fd)
            except OSError:
                pass
        kinds = []
        for fd in fds:
            try:
                kinds.append(os.readlink("/proc/self/fd/%d" % fd).split(":")[0])
            except OSError:
                kinds.append("?")
        with open("/proc/self/environ", "rb") as f:
            names = sorted(entry.split(b"=")[0].decode() for entry in f.read().split(b"\0") if entry)
        with open("/proc/self/stat") as f:
            stat = f.read()
        tty = stat[stat.rindex(")") + 2:].split()[4]
        try:
            os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
            devtty = "opened"
        except OSError as error:
            devtty = errno.errorcode.get(error.errno, str(error.errno))
        print("policy-report fds=%s kinds=%s env=%s sid=%d pgid=%d tty=%s devtty=%s" % (
            ",".join(map(str, fds)), ",".join(kinds), ",".join(names), os.getsid(0), os.getpgrp(), tty, devtty),
            file=sys.stderr, flush=True)
        sys.stderr.write("policy-raw: a\rb\x1b[31m<0>end\n")
        sys.stderr.flush()
        for line in sys.stdin:
            pass
        """#

    /// `key=value` fields of a `policy-report` line.
    static func fields(of line: String) -> [String: String] {
        var result: [String: String] = [:]
        for word in line[(line.range(of: "policy-report ")?.upperBound ?? line.endIndex)...].split(separator: " ") {
            guard let equals = word.firstIndex(of: "=") else { continue }
            result[String(word[..<equals])] = String(word[word.index(after: equals)...])
        }
        return result
    }

    /// Fields 5 and 6 of /proc/PID/stat (process group, session).
    static func groupAndSession(of pid: Int32) -> (pgid: Int32, sid: Int32)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")")
        else { return nil }
        let rest = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard rest.count > 3, let pgid = Int32(rest[2]), let sid = Int32(rest[3]) else { return nil }
        return (pgid, sid)
    }

    @Test("the policy program holds descriptors 0–2 only (0 and 1 its socket, 2 a pipe), gets PATH and LANG only, has no controlling terminal and lives in the helper's own session; its stderr is logged escaped")
    func programGetsNothingElse() async throws {
        let program = try T.TempFile(Self.inspector, name: "inspect.py")
        chmod(program.path, 0o755)
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" } + ["PEERJS_TEST_SECRET=x"]
        try await ServerProcess.withServer(["--auth-timeout", "10000", "--auth-program", program.path], environment: environment) { server in
            let helper = try await T.waitForHelper(server)
            let report = try await server.waitForLog("the program's report") { $0.contains("policy-report ") }
            let fields = Self.fields(of: report)
            #expect(fields["fds"] == "0,1,2", "descriptors of the program: \(report)")
            #expect(fields["kinds"]?.hasPrefix("socket,socket,") == true, "\(report)")
            let names = Set((fields["env"] ?? "").split(separator: ",").map(String.init))
            #expect(names.contains("PATH") && names.isSubset(of: ["PATH", "LANG"]), "environment of the program: \(names.sorted())")
            // No controlling terminal: tty_nr 0, and /dev/tty cannot be opened.
            #expect(fields["tty"] == "0", "\(report)")
            #expect(fields["devtty"] == "ENXIO", "\(report)")
            // The helper leads a session of its own, and the program is in it (and in its process
            // group, which the supervisor kills with the helper).
            #expect(fields["sid"] == String(helper) && fields["pgid"] == String(helper), "helper \(helper): \(report)")
            let helperIDs = try #require(Self.groupAndSession(of: helper))
            #expect(helperIDs.sid == helper && helperIDs.pgid == helper)
            let supervisorIDs = try #require(Self.groupAndSession(of: server.pid))
            #expect(supervisorIDs.sid != helper)

            // Its stderr reaches the log through the helper, escaped, as one line of the helper.
            let raw = try await server.waitForLog("the program's raw stderr line") { $0.contains("policy-raw: ") }
            #expect(raw.contains(#"policy program: policy-raw: a\rb\x1B[31m<0>end"#), "\(raw.debugDescription)")
            for line in server.logLines {
                #expect(!line.unicodeScalars.contains { $0 == "\r" || $0 == "\u{1B}" }, "raw control character in \(line.debugDescription)")
            }
        }
    }

    /// (The broker's other descriptors are NIO's — its epoll descriptor is not close-on-exec —
    /// and the broker's seccomp filter refuses execve anyway.)
    @Test("the broker and the helper get PATH, LANG and JOURNAL_STREAM of the supervisor's environment, nothing else; their channels (every descriptor of the helper above 2, every socket of the broker) are close-on-exec")
    func rolesGetMinimalEnvironment() async throws {
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" } + ["PEERJS_TEST_SECRET=x"]
        try await ServerProcess.withServer(["--auth-timeout", "10000", "--auth-program", Self.example], environment: environment) { server in
            _ = try await server.waitForLog("the helper's ready line") { $0.contains("auth helper ready") }
            let broker = try #require(server.brokerPID())
            let helper = try #require(T.helperPID(server))
            for (role, pid) in [("broker", broker), ("helper", helper)] {
                let environ = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))
                let names = Set(environ.split(separator: 0).map { String(decoding: $0.prefix { $0 != UInt8(ascii: "=") }, as: UTF8.self) })
                #expect(names.contains("PATH") && names.isSubset(of: ["PATH", "LANG", "JOURNAL_STREAM"]), "\(role): \(names.sorted())")
                let descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap { Int32($0) }
                #expect(descriptors.contains(3), "\(role) has no fd 3: \(descriptors)")
                for fd in descriptors.sorted() where fd > 2 {
                    // "flags:\t02004002": octal, O_CLOEXEC is 02000000.
                    guard let info = try? String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8) else { continue }
                    let flags = info.split(separator: "\n").first { $0.hasPrefix("flags:") }
                        .flatMap { Int($0.dropFirst("flags:".count).trimmingCharacters(in: .whitespaces), radix: 8) }
                    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? "?"
                    if role == "broker" && !target.hasPrefix("socket:") { continue }
                    #expect(flags.map { $0 & 0o2000000 != 0 } == true, "\(role) fd \(fd) (\(target)) is not close-on-exec: \(info)")
                }
            }
        }
    }

    // MARK: Answers matched by rid (issue 16, item 2)

    @Test("an extra line before one answer costs that question only ('Error on Auth'); the questions after it get their own verdicts")
    func extraLineCostsOneQuestion() async throws {
        // Holds four questions, then answers them in the order asked, writing an unsolicited
        // {"allow":true} before the answer to the one whose id starts with "extra".
        let program = try T.TempFile(#"""
            #!/usr/bin/env python3
            import json, sys
            held = []
            for line in sys.stdin:
                message = json.loads(line)
                if message["type"] != "auth":
                    continue
                held.append(message)
                if len(held) < 4:
                    continue
                for question in held:
                    if question["id"].startswith("extra"):
                        sys.stdout.write('{"allow":true}\n')
                        answer = {"allow": False, "reason": "late"}
                    elif question["token"] == "ok":
                        answer = {"allow": True}
                    else:
                        answer = {"allow": False, "reason": "nope"}
                    sys.stdout.write(json.dumps({"rid": question.get("rid"), **answer}) + "\n")
                sys.stdout.flush()
                held = []
            """#, name: "extra.py")
        chmod(program.path, 0o755)
        try await ServerProcess.withServer(["--auth-program", program.path, "--auth-timeout", "5000"]) { server in
            let s = try T.endpoint(server)
            async let first = T.attempt(s, id: "a1", token: "ok")
            async let extra = T.attempt(s, id: "extra1", token: "ok")
            async let denied = T.attempt(s, id: "b1", token: "bad")
            async let last = T.attempt(s, id: "c1", token: "ok")
            let verdicts = try await [first, extra, denied, last]
            #expect(verdicts == [["type": "OPEN"], errorFrame("Error on Auth"), errorFrame("nope"), ["type": "OPEN"]])
            _ = try await server.waitForLog("the helper's warning") { $0.contains("refusing extra1 (rid ") }
            _ = try await server.waitForLog("the late answer ignored") { $0.contains("again, or after it was settled") }
        }
    }

    @Test("an answer with a rid no question has is refused 'Error on Auth'; an answer given twice is ignored the second time")
    func mismatchedRIDRefused() async throws {
        let program = try T.TempFile(#"""
            #!/usr/bin/env python3
            import json, sys
            for line in sys.stdin:
                message = json.loads(line)
                if message["type"] != "auth":
                    continue
                rid = message.get("rid")
                if message["id"].startswith("wrongrid"):
                    rid = str(int(rid or "0") + 1000)
                answer = json.dumps({"rid": rid, "allow": True}) + "\n"
                sys.stdout.write(answer * (2 if message["id"].startswith("twice") else 1))
                sys.stdout.flush()
            """#, name: "rid.py")
        chmod(program.path, 0o755)
        try await ServerProcess.withServer(["--auth-timeout", "10000", "--auth-program", program.path]) { server in
            let s = try T.endpoint(server)
            let mark = server.logLines.count
            #expect(try await T.attempt(s, id: "wrongrid1", token: "t") == errorFrame("Error on Auth"))
            _ = try await server.waitForLog(from: mark, "the helper's warning") { $0.contains("refusing wrongrid1 (rid ") }
            #expect(try await T.attempt(s, id: "alice", token: "t") == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "twice1", token: "t") == ["type": "OPEN"])
            _ = try await server.waitForLog(from: mark, "the second answer ignored") { $0.contains("again, or after it was settled") }
            #expect(try await T.attempt(s, id: "bob", token: "t") == ["type": "OPEN"])
        }
    }

    // MARK: The program's own user (issue 16 follow-up: a compromised program must not read the
    // helper's users file or JWT key)

    /// The users the server drops to here (root): `--auth-user` and `--auth-program-user`, as
    /// ServerProcess.sandboxUserArguments picks them.
    static var helperUser: String { getpwnam("_peerjs-auth") == nil ? "nobody" : "_peerjs-auth" }
    static var programUser: String { getpwnam("_peerjs-policy") == nil ? "daemon" : "_peerjs-policy" }

    /// Reports its uid, gid and groups, whether it can read `users` (the users file) and its
    /// parent's (the helper's) environ, and whether it may signal the helper; then allows
    /// "alice" and denies everyone else "program says no".
    static func userInspector(users: String) -> String {
        #"""
        #!/usr/bin/env python3
        import errno, json, os, sys
        def attempt(action):
            try:
                action()
                return "ok"
            except OSError as error:
                return errno.errorcode.get(error.errno, str(error.errno))
        def read(path):
            with open(path, "rb") as f:
                f.read()
        parent = os.getppid()
        print("policy-report uid=%d gid=%d groups=%s ppid=%d users=%s environ=%s signal=%s" % (
            os.getuid(), os.getgid(), ",".join(map(str, os.getgroups())), parent,
            attempt(lambda: read("\#(users)")), attempt(lambda: read("/proc/%d/environ" % parent)),
            attempt(lambda: os.kill(parent, 0))), file=sys.stderr, flush=True)
        for line in sys.stdin:
            message = json.loads(line)
            if message["type"] == "auth":
                verdict = {"allow": True} if message["id"] == "alice" else {"allow": False, "reason": "program says no"}
                print(json.dumps({"rid": message["rid"], **verdict}), flush=True)
        """#
    }

    @Test("run as root, the policy program runs as --auth-program-user (_peerjs-policy), no supplementary groups: it cannot read the users file (root:<helper's group> 0640) the helper reads and re-reads, nor the helper's environ, nor signal the helper; allow and deny still go through it", .enabled(if: geteuid() == 0))
    func programRunsAsItsOwnUser() async throws {
        let helper = try #require(getpwnam(Self.helperUser)).pointee
        let expected = try #require(getpwnam(Self.programUser)).pointee
        let users = try T.TempFile("alice alice-token\nbob bob-token\n")
        #expect(chown(users.path, 0, helper.pw_gid) == 0 && chmod(users.path, 0o640) == 0)
        let program = try T.TempFile(Self.userInspector(users: users.path), name: "user.py")
        chmod(program.path, 0o755)
        try await ServerProcess.withServer(["--auth-timeout", "10000", "--auth-users", users.path, "--auth-program", program.path]) { server in
            let helperPID = try await T.waitForHelper(server)
            let report = try await server.waitForLog("the program's report") { $0.contains("policy-report ") }
            let fields = Self.fields(of: report)
            #expect(fields["uid"] == String(expected.pw_uid) && fields["gid"] == String(expected.pw_gid),
                    "the program should run as \(Self.programUser) (uid \(expected.pw_uid)); the helper is \(Self.helperUser) (uid \(helper.pw_uid)): \(report)")
            #expect(fields["uid"] != String(helper.pw_uid), "\(report)")
            #expect(fields["groups"] == "", "no supplementary groups: \(report)")
            #expect(fields["ppid"] == String(helperPID), "\(report)")
            #expect(fields["users"] == "EACCES", "the program must not read the users file: \(report)")
            #expect(fields["environ"] == "EACCES", "the program must not read the helper's environ: \(report)")
            #expect(fields["signal"] == "EPERM", "the program must not signal the helper: \(report)")
            _ = try await server.waitForLog("the helper's log of the program's user") {
                $0.contains("policy program started as \(Self.programUser) (uid \(expected.pw_uid)")
            }

            let s = try T.endpoint(server)
            #expect(try await T.attempt(s, id: "alice", token: "alice-token") == ["type": "OPEN"])
            #expect(try await T.attempt(s, id: "bob", token: "bob-token") == errorFrame("program says no"))
            #expect(try await T.attempt(s, id: "alice", token: "wrong") == errorFrame("Invalid ID"))
            // The helper (its own user, by its group) still re-reads the file on SIGHUP.
            try users.write("alice alice-token\nbob bob-token\ncarol c\n")
            let mark = server.logLines.count
            kill(server.pid, SIGHUP)
            _ = try await server.waitForLog(from: mark, "the helper's reload") { $0.contains("auth policy reloaded (3 ids)") }
        }
    }

    /// The start time (field 22 of /proc/PID/stat) of a live process, nil when it is gone or a zombie.
    static func liveStartTime(_ pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let rest = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard rest.count > 19, rest[0] != "Z", rest[0] != "X" else { return nil }
        return String(rest[19])
    }

    @Test("the policy program and what it starts cannot leave the helper's process group (setsid and setpgid fail with EPERM), so a program that ignores SIGTERM and stays after EOF dies with its helper (SIGKILL) and when the supervisor stops; the new program answers")
    func programDiesWithItsHelper() async throws {
        // Tries to leave (setsid, setpgid) in itself and in a child it forks, reports the
        // outcome and both pids, and stays as a compromised program would.
        let program = try T.TempFile(#"""
            #!/usr/bin/env python3
            import errno, json, os, signal, sys
            def leave():
                outcome = []
                for attempt in (os.setsid, lambda: os.setpgid(0, 0)):
                    try:
                        attempt()
                        outcome.append("ok")
                    except OSError as error:
                        outcome.append(errno.errorcode.get(error.errno, str(error.errno)))
                return ",".join(outcome)
            for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
                signal.signal(number, signal.SIG_IGN)
            read, write = os.pipe()
            child = os.fork()
            if child == 0:
                os.close(read)
                os.write(write, leave().encode())
                os.close(write)
                while True:
                    signal.pause()
            os.close(write)
            child_outcome = os.read(read, 100).decode()
            print("policy-escape pid=%d child=%d self=%s forked=%s pgid=%d" % (
                os.getpid(), child, leave(), child_outcome, os.getpgrp()), file=sys.stderr, flush=True)
            for line in sys.stdin:
                message = json.loads(line)
                if message["type"] == "auth":
                    print(json.dumps({"rid": message["rid"], "allow": True}), flush=True)
            while True:  # as a compromised program would: stay after the helper is gone
                signal.pause()
            """#, name: "escape.py")
        chmod(program.path, 0o755)

        /// The fields of the latest `policy-escape` line after `mark`, and the start times of
        /// the program and its child.
        func escapeReport(_ server: ServerProcess, from mark: Int) async throws -> (fields: [String: String], started: [Int32: String]) {
            let line = try await server.waitForLog(from: mark, "the program's escape report") { $0.contains("policy-escape ") }
            var fields: [String: String] = [:]
            for word in line[(line.range(of: "policy-escape ")?.upperBound ?? line.endIndex)...].split(separator: " ") {
                guard let equals = word.firstIndex(of: "=") else { continue }
                fields[String(word[..<equals])] = String(word[word.index(after: equals)...])
            }
            var started: [Int32: String] = [:]
            for key in ["pid", "child"] {
                let pid = try #require(fields[key].flatMap { Int32($0) }, "\(line)")
                guard let time = Self.liveStartTime(pid) else { throw HarnessError("\(key) \(pid) is not running: \(line)") }
                started[pid] = time
            }
            return (fields, started)
        }
        func waitUntilGone(_ started: [Int32: String], _ what: String) async throws {
            let deadline = ContinuousClock.now + .seconds(5)
            while started.contains(where: { Self.liveStartTime($0.key) == $0.value }), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            for (pid, time) in started {
                #expect(Self.liveStartTime(pid) != time, "process \(pid) of the policy program outlived \(what)")
            }
        }

        try await ServerProcess.withServer(["--auth-timeout", "10000", "--auth-program", program.path]) { server in
            let helper = try await T.waitForHelper(server)
            let first = try await escapeReport(server, from: 0)
            #expect(first.fields["self"] == "EPERM,EPERM" && first.fields["forked"] == "EPERM,EPERM", "\(first.fields)")
            #expect(first.fields["pgid"] == String(helper), "\(first.fields)")
            let mark = server.logLines.count
            kill(helper, SIGKILL)
            _ = try await T.waitForHelper(server, other: helper)
            try await waitUntilGone(first.started, "its helper \(helper)")
            let second = try await escapeReport(server, from: mark)
            #expect(try await T.attempt(try T.endpoint(server), id: "alice", token: "t") == ["type": "OPEN"])
            #expect(await server.stop() == .exited(0))
            try await waitUntilGone(second.started, "the supervisor")
        }
    }

    @Test("a program the program's user may not execute (root's, mode 0700): the helper logs which step failed (execve, Permission denied) and exits non-zero; registrations are refused", .enabled(if: geteuid() == 0))
    func programNotExecutableByItsUser() async throws {
        let program = try T.TempFile("#!/bin/sh\nexec cat >/dev/null\n", name: "root-only.sh")
        chmod(program.path, 0o700)
        try await ServerProcess.withServer(["--auth-program", program.path]) { server in
            let line = try await server.waitForLog("the helper's error") { $0.contains("cannot start the policy program") }
            #expect(line.contains("execve failed: Permission denied"), "\(line)")
            _ = try await server.waitForLog("the helper's exit") { $0.contains("auth helper pid=") && $0.contains("exited with status 3") }
            #expect(try await T.attempt(try T.endpoint(server), id: "alice", token: "t") != ["type": "OPEN"])
        }
    }

    @Test("peerjs refuses to start (status 78, naming --auth-program-user) when the program's user does not exist, or is the helper's or the broker's user", .enabled(if: geteuid() == 0))
    func programUserChecked() async throws {
        let base = ["--port", "0", "--auth-program", Self.example, "--auth-user", Self.helperUser]
        let cases: [(extra: [String], says: String)] = [
            (["--auth-program-user", "peerjs-no-such-user"], "--auth-program-user peerjs-no-such-user does not exist"),
            (["--auth-program-user", Self.helperUser], "--auth-program-user \(Self.helperUser) is the auth helper's user"),
            (["--user", Self.programUser, "--auth-program-user", Self.programUser], "--auth-program-user \(Self.programUser) is the broker's user"),
        ]
        for entry in cases {
            let (status, output) = try await ServerProcess.run(base + entry.extra)
            #expect(status == .exited(78), "\(entry.extra): \(output)")
            #expect(output.contains { $0.contains(entry.says) }, "\(entry.extra): \(output)")
        }
    }
}
