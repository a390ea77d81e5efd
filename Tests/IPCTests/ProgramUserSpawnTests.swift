import Glibc
import IPC
import Testing

/// `RoleSpawner.spawnProgram(executable:arguments:stream:stderr:environment:user:)`: the auth
/// helper's policy program, started by fork + execve in C so that it can run as a user of its own.
@Suite("RoleSpawner: a program under its own user")
struct ProgramUserSpawnTests {
    /// Runs `script` with /bin/sh through the C path; returns its output lines and exit status.
    static func run(_ script: String, user: RoleSpawner.ProgramUser?) throws -> (lines: [String], status: Int32) {
        let output = makePipe()
        defer { close(output.read) }
        // 3 or more (makePipe's ends are), as the helper's socket and pipe are.
        let spawned = Result { () throws(IPCError) in
            try RoleSpawner.spawnProgram(
                executable: "/bin/sh", arguments: ["sh", "-c", script], stream: output.write, stderr: output.write,
                environment: ["PATH=/usr/bin:/bin"], user: user)
        }
        close(output.write)
        let pid = try spawned.get()
        let text = String(decoding: try #require(readToEOF(output.read)), as: UTF8.self)
        var status: Int32 = 0
        for _ in 0..<64 where waitpid(pid, &status, 0) != pid && errno == EINTR {}
        return (text.split(separator: "\n").map(String.init), (status >> 8) & 0xFF)
    }

    static let inspect = """
        grep -E '^(Uid|Gid|Groups|NoNewPrivs|CapPrm|CapEff|CapAmb|Seccomp):' /proc/self/status | tr -s '\\t ' ' '
        for fd in /proc/self/fd/*; do n=${fd##*/}; [ -e "$fd" ] && echo "fd=$n"; done
        true
        """

    @Test("as this process's user: no_new_privs, a seccomp filter (setsid fails), descriptors 0–2 only; a failed execve is reported with its errno, and bad descriptors are refused")
    func sameUser() throws {
        let (lines, status) = try Self.run(Self.inspect + "\nexec python3 -c 'import os\ntry:\n  os.setsid(); print(\"setsid=ok\")\nexcept OSError as e: print(\"setsid=%d\" % e.errno)'", user: nil)
        #expect(status == 0, "\(lines)")
        #expect(lines.contains("NoNewPrivs: 1") && lines.contains("Seccomp: 2"), "\(lines)")
        #expect(lines.contains("setsid=\(EPERM)"), "\(lines)")
        let fds = Set(lines.compactMap { $0.hasPrefix("fd=") ? Int32($0.dropFirst(3)) : nil })
        #expect(fds.isSuperset(of: [0, 1, 2]) && fds.subtracting([0, 1, 2]).count <= 1, "child fds: \(fds.sorted())")

        let missing = ipcError { () throws(IPCError) in
            try RoleSpawner.spawnProgram(executable: "/nonexistent/policy", arguments: ["policy"], stream: 100, stderr: 100, environment: [], user: nil)
        }
        // stream 100 is not open: dup2 fails in the child, reported as such.
        #expect(missing?.code == .system(EBADF) && missing?.description.contains("dup2") == true, "\(String(describing: missing))")
        let output = makePipe()
        defer { close(output.read); close(output.write) }
        let notFound = ipcError { () throws(IPCError) in
            try RoleSpawner.spawnProgram(executable: "/nonexistent/policy", arguments: ["policy"], stream: output.write, stderr: output.write, environment: [], user: nil)
        }
        #expect(notFound?.code == .system(ENOENT) && notFound?.description.contains("execve") == true, "\(String(describing: notFound))")
        #expect(errorCode { () throws(IPCError) in
            try RoleSpawner.spawnProgram(executable: "/bin/true", arguments: ["true"], stream: 1, stderr: 2, environment: [], user: nil)
        } == .system(EINVAL))
    }

    @Test("as root, with a user: the child has that uid and gid everywhere, no groups, no capabilities; a program that user may not execute is reported (execve, EACCES); root is refused", .enabled(if: geteuid() == 0))
    func otherUser() throws {
        let nobody = try #require(getpwnam("nobody")).pointee
        let user = RoleSpawner.ProgramUser(name: "nobody", uid: nobody.pw_uid, gid: nobody.pw_gid)
        let (lines, status) = try Self.run(Self.inspect, user: user)
        #expect(status == 0, "\(lines)")
        #expect(lines.contains("Uid: \(user.uid) \(user.uid) \(user.uid) \(user.uid)"), "\(lines)")
        #expect(lines.contains("Gid: \(user.gid) \(user.gid) \(user.gid) \(user.gid)"), "\(lines)")
        #expect(lines.contains { $0.hasPrefix("Groups:") && $0.dropFirst("Groups:".count).allSatisfy { $0 == " " } }, "\(lines)")
        for set in ["CapPrm", "CapEff", "CapAmb"] {
            #expect(lines.contains("\(set): 0000000000000000"), "\(set): \(lines)")
        }

        // Executable by root only: the supervisor's access(X_OK) passes, the program's user fails.
        var template = Array("/tmp/peerjs-spawn-XXXXXX".utf8CString)
        let directory = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        defer { unlink(directory + "/policy"); rmdir(directory) }
        let fd = open(directory + "/policy", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o700)
        #expect(fd >= 0)
        _ = "#!/bin/sh\nexit 0\n".withCString { write(fd, $0, strlen($0)) }
        close(fd)
        let output = makePipe()
        defer { close(output.read); close(output.write) }
        let denied = ipcError { () throws(IPCError) in
            try RoleSpawner.spawnProgram(executable: directory + "/policy", arguments: ["policy"], stream: output.write, stderr: output.write, environment: [], user: user)
        }
        #expect(denied?.code == .system(EACCES) && denied?.description.contains("execve") == true, "\(String(describing: denied))")
        #expect(errorCode { () throws(IPCError) in
            try RoleSpawner.spawnProgram(executable: "/bin/true", arguments: ["true"], stream: output.write, stderr: output.write, environment: [],
                                         user: RoleSpawner.ProgramUser(name: "root", uid: 0, gid: 0))
        } == .invalidArgument)
    }
}
