import Glibc
import IPC
import Testing

/// Waits for `pid` and returns its exit status, or nil if it did not exit normally.
private func exitStatus(_ pid: pid_t) -> Int32? {
    var status: Int32 = 0
    for _ in 0..<64 {
        let rc = waitpid(pid, &status, 0)
        if rc == pid { break }
        if rc < 0 && errno != EINTR { return nil }
    }
    guard status & 0x7F == 0 else { return nil }  // WIFEXITED
    return (status >> 8) & 0xFF  // WEXITSTATUS
}

@Suite("RoleSpawner")
struct RoleSpawnerTests {
    @Test("the child sees exactly 0, 1, 2 and its mapped fd 3, stdin is /dev/null, the given environment")
    func fdMap() throws {
        let output = makePipe()
        defer { close(output.read) }
        // A descriptor that is *not* close-on-exec and not in the map must still not leak.
        var leak: [Int32] = [-1, -1]
        #expect(pipe(&leak) == 0)
        defer { close(leak[0]); close(leak[1]) }

        let script = """
            exec 1>&3
            echo "env=$PEERJS_SPAWN_TEST"
            echo "stdin=$(readlink /proc/self/fd/0)"
            exec ls -1 /proc/self/fd
            """
        let spawned = Result { () throws(IPCError) in
            try RoleSpawner.spawn(
                executable: "/bin/sh", arguments: ["sh", "-c", script], fdMap: [(parent: output.write, child: 3)],
                environment: ["PATH=/usr/bin:/bin", "LC_ALL=C", "PEERJS_SPAWN_TEST=yes"])
        }
        close(output.write)
        let pid = try spawned.get()

        let text = String(decoding: try #require(readToEOF(output.read)), as: UTF8.self)
        #expect(exitStatus(pid) == 0)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("env=yes"))
        #expect(lines.contains("stdin=/dev/null"))
        let fds = Set(lines.compactMap { Int32($0) })
        // 0, 1, 2, 3 and the one descriptor ls opens to read the directory.
        #expect(fds.isSuperset(of: [0, 1, 2, 3]))
        #expect(fds.subtracting([0, 1, 2, 3]).count == 1, "child fds: \(fds.sorted())")
    }

    @Test("the child starts with an empty signal mask and SIGPIPE at its default action")
    func signals() throws {
        let output = makePipe()
        defer { close(output.read) }
        // Block SIGTERM on this thread and ignore SIGPIPE in this process: the child must inherit neither.
        // dd (not a shell, which may reset its mask) copies its own /proc status to the pipe.
        var block = sigset_t()
        var previous = sigset_t()
        sigemptyset(&block)
        sigaddset(&block, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &block, &previous)
        signal(SIGPIPE, SIG_IGN)
        let spawned = Result { () throws(IPCError) in
            try RoleSpawner.spawn(
                executable: "/bin/dd", arguments: ["dd", "if=/proc/self/status", "of=/dev/fd/3", "status=none"],
                fdMap: [(parent: output.write, child: 3)])
        }
        pthread_sigmask(SIG_SETMASK, &previous, nil)
        close(output.write)
        let pid = try spawned.get()

        let text = String(decoding: try #require(readToEOF(output.read)), as: UTF8.self)
        #expect(exitStatus(pid) == 0)
        let masks = Dictionary(uniqueKeysWithValues: text.split(separator: "\n").compactMap { line -> (String, UInt64)? in
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0] == "SigBlk" || parts[0] == "SigIgn" else { return nil }
            return (String(parts[0]), UInt64(String(parts[1].filter { !$0.isWhitespace }), radix: 16) ?? .max)
        })
        #expect(masks["SigBlk"] == 0)
        let sigpipeBit = UInt64(1) << UInt64(SIGPIPE - 1)
        #expect(masks["SigIgn"].map { $0 & sigpipeBit } == 0)
    }

    @Test("a bad fd map is refused before spawning")
    func badMap() {
        let pipe = makePipe()
        defer { close(pipe.read); close(pipe.write) }
        let maps: [[(parent: Int32, child: Int32)]] = [
            [(parent: pipe.write, child: 2)],
            [(parent: pipe.write, child: 3), (parent: pipe.read, child: 3)],
            [(parent: -1, child: 3)],
        ]
        for map in maps {
            #expect(errorCode { () throws(IPCError) in
                try RoleSpawner.spawn(executable: "/bin/true", arguments: ["true"], fdMap: map)
            } == .invalidArgument)
        }
        #expect(errorCode { () throws(IPCError) in
            try RoleSpawner.spawn(executable: "/bin/true", arguments: ["true"], fdMap: [(parent: 999, child: 3)])
        } == .system(EBADF))
    }

    @Test("a missing executable is a system error; an exit status comes back through waitpid")
    func missingExecutableAndStatus() throws {
        #expect(errorCode { () throws(IPCError) in
            try RoleSpawner.spawn(executable: "/nonexistent/peerjs", arguments: ["peerjs"], fdMap: [])
        } == .system(ENOENT))
        let pid = try RoleSpawner.spawn(executable: "/bin/sh", arguments: ["sh", "-c", "exit 7"], fdMap: [])
        #expect(exitStatus(pid) == 7)
    }

    @Test("spawnProgram: the child holds 0, 1 and 2 only, even past a descriptor that is not close-on-exec, and exactly the environment given")
    func program() throws {
        let output = makePipe()
        defer { close(output.read) }
        var leak: [Int32] = [-1, -1]
        #expect(pipe(&leak) == 0)  // not close-on-exec
        defer { close(leak[0]); close(leak[1]) }
        let input = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(input) }
        // env prints the environment it got: the one given, plus what the shell exports itself.
        let script = """
            for fd in /proc/self/fd/*; do n=${fd##*/}; [ -e "$fd" ] && echo "fd=$n"; done
            exec env
            """
        let spawned = Result { () throws(IPCError) in
            try RoleSpawner.spawnProgram(
                executable: "/bin/sh", arguments: ["sh", "-c", script], stdin: input, stdout: output.write, stderr: output.write,
                environment: ["PATH=/usr/bin:/bin", "LANG=C"])
        }
        close(output.write)
        let pid = try spawned.get()
        let lines = String(decoding: try #require(readToEOF(output.read)), as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(exitStatus(pid) == 0)
        let fds = Set(lines.compactMap { $0.hasPrefix("fd=") ? Int32($0.dropFirst(3)) : nil })
        // 0, 1, 2 and possibly the one descriptor the glob's directory read had open.
        #expect(fds.isSuperset(of: [0, 1, 2]) && fds.subtracting([0, 1, 2]).count <= 1, "child fds: \(fds.sorted())")
        #expect(!fds.contains(leak[0]) && !fds.contains(leak[1]))
        // (dash exports PWD itself.)
        let environment = lines.filter { !$0.hasPrefix("fd=") && !$0.hasPrefix("PWD=") }
        #expect(Set(environment) == ["PATH=/usr/bin:/bin", "LANG=C"], "\(environment)")
        #expect(errorCode { () throws(IPCError) in
            try RoleSpawner.spawnProgram(executable: "/bin/true", arguments: ["true"], stdin: 0, stdout: 1, stderr: 2, environment: [])
        } == .invalidArgument)
    }

    @Test("newSession: the child leads a session and process group of its own")
    func newSession() throws {
        let output = makePipe()
        defer { close(output.read) }
        let spawned = Result { () throws(IPCError) in
            try RoleSpawner.spawn(
                executable: "/bin/dd", arguments: ["dd", "if=/proc/self/stat", "of=/dev/fd/3", "status=none"],
                fdMap: [(parent: output.write, child: 3)], newSession: true)
        }
        close(output.write)
        let pid = try spawned.get()
        let stat = String(decoding: try #require(readToEOF(output.read)), as: UTF8.self)
        #expect(exitStatus(pid) == 0)
        let close = try #require(stat.lastIndex(of: ")"))
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")  // state ppid pgrp session tty_nr
        #expect(fields.count > 4 && fields[2] == "\(pid)" && fields[3] == "\(pid)" && fields[4] == "0", "\(stat)")
    }
}
