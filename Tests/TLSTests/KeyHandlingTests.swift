import Foundation
import NIOSSL
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 16 items 4 and 7 against the real binary: where the TLS private key lives in the
/// supervisor's and the broker's memory, and which certificate the supervisor believes is in
/// force after a SIGHUP.
@Suite("TLS key handling and reload acknowledgement (issue 16)", .serialized)
struct KeyHandlingTests {
    /// Connects, completes a handshake and returns the certificate the broker served.
    private func servedCertificate(port: Int, certs: CertificateDirectory) async throws -> [UInt8]? {
        let client = try await RawTCPConnection.connect(port: port, tls: try certs.clientTLS())
        let served = try await client.peerCertificate()?.toDERBytes()
        #expect(try await client.httpGet("/peerjs/id").status == 200)
        return served
    }

    @Test("item 4: after start and a SIGHUP, no process holds a DER or PEM copy of either private key outside the supervisor's one locked, never-dumped mapping (the broker's TLS context holds the key in force in BoringSSL's own form); core dumps are off",
          .enabled(if: geteuid() == 0, "reading another process's memory needs CAP_SYS_PTRACE"))
    func noStrayKeyCopies() async throws {
        let certs = try await CertificateDirectory.withTwoLeaves()
        try await ServerProcess.withServer(certs.liveArguments) { server in
            let port = try await server.listenerPort("https")
            _ = try await server.waitForLog("the broker's first acknowledgement") { $0.contains("took TLS generation 1") }
            #expect(try await servedCertificate(port: port, certs: certs) == certs.certificate("one.pem").toDERBytes())

            try certs.goLive("two")
            let mark = server.logLines.count
            server.signal(SIGHUP)
            _ = try await server.waitForLog(from: mark, "the supervisor's reload acknowledgement") { $0.contains("took TLS generation 2") }
            #expect(try await servedCertificate(port: port, certs: certs) == certs.certificate("two.pem").toDERBytes())

            let broker = try #require(server.brokerPID())
            var needles: [(String, [UInt8])] = []
            for name in ["one", "two"] {
                let (scalar, pemText) = try Self.keyNeedles(certs.file("\(name).key"))
                needles.append(("\(name): private scalar (DER)", scalar))
                needles.append(("\(name): PEM text", pemText))
            }
            let supervisorHits = try MemoryScan.hits(pid: server.pid, needles: needles.map(\.1))
            let brokerHits = try MemoryScan.hits(pid: broker, needles: needles.map(\.1))
            print("issue 16 item 4: scanned \(supervisorHits.scanned >> 20) MiB of the supervisor and \(brokerHits.scanned >> 20) MiB of the broker")
            // The supervisor keeps exactly one copy of the key in force (a restarted broker needs
            // it), in its SecretBytes mapping; nothing else anywhere.
            let stray = supervisorHits.hits.filter { !($0.needle == 2 && $0.flags.contains("dd")) }
            #expect(stray.isEmpty, "supervisor: \(stray.map { "\(needles[$0.needle].0) at 0x\(String($0.address, radix: 16)) [\($0.flags.joined(separator: " "))]" })")
            let kept = supervisorHits.hits.filter { $0.needle == 2 && $0.flags.contains("dd") }
            // (Under a sanitizer the scan is capped before it reaches every mapping: scripts/sanitize.sh.)
            if ProcessInfo.processInfo.environment["PEERJS_SANITIZER"] == nil {
                #expect(kept.count == 1, "the supervisor's copy of the key in force: \(kept.count)")
            }
            #expect(brokerHits.hits.isEmpty, "broker: \(brokerHits.hits.map { "\(needles[$0.needle].0) at 0x\(String($0.address, radix: 16)) [\($0.flags.joined(separator: " "))]" })")

            // No core file can be written by the supervisor or (inherited) by the broker.
            for pid in [server.pid, broker] {
                let limits = try readProcFile("/proc/\(pid)/limits")
                let core = limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") }.map(String.init) ?? ""
                let fields = core.split(separator: " ", omittingEmptySubsequences: true)
                #expect(fields.count >= 6 && fields[4] == "0" && fields[5] == "0", "pid \(pid): \(core)")
            }
        }
    }

    @Test("item 4: a supervisor that is not root and serves TLS is not dumpable (its /proc files turn root's), nor is its broker; both have RLIMIT_CORE 0/0",
          .enabled(if: geteuid() == 0, "starting peerjs as another user needs root"))
    func notDumpable() async throws {
        let certs = try await CertificateDirectory.make()
        try await certs.makeLeaf("one")
        chmod(certs.path, 0o755)
        for name in ["one.key", "one-chain.pem"] { chmod(certs.file(name), 0o644) }
        let nobody: uid_t = 65534
        let server = try ServerProcess.spawn(
            ["--host", "127.0.0.1", "--port", "0", "--sslkey", certs.file("one.key"), "--sslcert", certs.file("one-chain.pem")],
            launcher: ["/usr/bin/setpriv", "--reuid=\(nobody)", "--regid=\(nobody)", "--clear-groups", "--inh-caps=-all"])
        _ = try await server.waitForLine("the Started line") { $0.contains("Started PeerServer on") }
        let broker = try #require(server.childPIDs.first)
        for (role, pid) in [("supervisor", server.pid), ("broker", broker)] {
            let uidLine = try readProcFile("/proc/\(pid)/status").split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
            let uids = uidLine.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().compactMap { uid_t($0) }
            #expect(!uids.isEmpty && uids.allSatisfy { $0 == nobody }, "the \(role) does not run as nobody (\(uidLine)); the test proves nothing")
            var environ = stat()
            #expect(stat("/proc/\(pid)/environ", &environ) == 0)
            // A dumpable process owns its /proc/PID files; a non-dumpable one's belong to root.
            #expect(environ.st_uid == 0, "the \(role) is dumpable: /proc/\(pid)/environ belongs to uid \(environ.st_uid)")
            let limits = try readProcFile("/proc/\(pid)/limits")
            let core = limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") }.map(String.init) ?? ""
            let fields = core.split(separator: " ", omittingEmptySubsequences: true)
            #expect(fields.count >= 6 && fields[4] == "0" && fields[5] == "0", "\(role): \(core)")
        }
        await server.stop()
    }

    @Test("item 7: a key that does not match its certificate on SIGHUP is an error and the old certificate is still served; a broker that does not answer is an error after 5 s and nothing changes in the supervisor's belief until it takes the new one")
    func reloadIsAcknowledged() async throws {
        let certs = try await CertificateDirectory.make()
        try await certs.makeLeaf("one")
        try await certs.makeLeaf("two")
        try await certs.makeLeaf("three")
        try certs.goLive("one")
        try await ServerProcess.withServer(certs.liveArguments) { server in
            let port = try await server.listenerPort("https")
            let one = try certs.certificate("one.pem").toDERBytes()
            let two = try certs.certificate("two.pem").toDERBytes()
            let three = try certs.certificate("three.pem").toDERBytes()
            _ = try await server.waitForLog("the broker's first acknowledgement") { $0.contains("took TLS generation 1") }

            // The key of "two" with the certificate of "one": refused, and "one" is still served.
            try certs.write("live.key", try certs.read("two.key"))
            var mark = server.logLines.count
            server.signal(SIGHUP)
            let refused = try await server.waitForLog(from: mark, "the refused reload") { $0.contains("TLS reload failed") }
            #expect(refused.contains("does not match"), "\(refused)")
            #expect(try await servedCertificate(port: port, certs: certs) == one)

            // A broker that cannot answer (stopped): the supervisor sends generation 2 and, 5 s
            // later, says it has no answer; it does not claim the new certificate is in force.
            try certs.write("live.pem", try certs.read("two-chain.pem"))
            let broker = try #require(server.brokerPID())
            kill(broker, SIGSTOP)
            var resumed = false
            defer { if !resumed { kill(broker, SIGCONT) } }
            mark = server.logLines.count
            server.signal(SIGHUP)
            let late = try await server.waitForLog(from: mark, "the missing-answer error") { $0.contains("has not answered TLS generation") }
            #expect(late.contains("generation 1 stays in force"), "\(late)")
            #expect(!server.logLines[mark...].contains { $0.contains("took TLS generation") || $0.contains("TLS certificate and key reloaded") },
                    "the supervisor claimed a reload the broker had not done: \(server.logLines[mark...])")
            kill(broker, SIGCONT)
            resumed = true
            let taken = try await server.waitForLog(from: mark, "the late acknowledgement") { $0.contains("took TLS generation") }
            #expect(taken.contains("broker pid=\(broker) took TLS generation 2"), "\(taken)")
            #expect(try await servedCertificate(port: port, certs: certs) == two)

            // A good pair is taken, logged, and served; a restarted broker is sent it too.
            try certs.goLive("three")
            mark = server.logLines.count
            server.signal(SIGHUP)
            _ = try await server.waitForLog(from: mark, "the acknowledgement of generation 3") { $0.contains("took TLS generation 3") }
            #expect(try await servedCertificate(port: port, certs: certs) == three)
            mark = server.logLines.count
            kill(try #require(server.brokerPID()), SIGKILL)
            let again = try await server.waitForLog(from: mark, "the restarted broker's acknowledgement") { $0.contains("took TLS generation") }
            #expect(again.contains("generation 3"), "\(again)")
            _ = try await server.waitForLog(from: mark, "the restarted broker's ready line") { $0.contains("ready; accepting again") }
            #expect(try await servedCertificate(port: port, certs: certs) == three)
        }
    }

    @Test("item 7: a hand-off that fails half-way (the broker stopped, a 400 KB chain fills its channel) is an error and the old certificate stays in force; a restarted broker is sent the new one, which the supervisor checked")
    func failedHandOffKeepsTheOldCertificate() async throws {
        let certs = try await CertificateDirectory.withTwoLeaves()
        try await ServerProcess.withServer(certs.liveArguments) { server in
            let port = try await server.listenerPort("https")
            let one = try certs.certificate("one.pem").toDERBytes()
            let two = try certs.certificate("two.pem").toDERBytes()
            _ = try await server.waitForLog("the broker's first acknowledgement") { $0.contains("took TLS generation 1") }

            // A valid but long chain (the CA repeated): more than the channel's socket buffer.
            let ca = try certs.read("ca.pem")
            let padding = String(repeating: ca, count: 400 * 1024 / ca.utf8.count)
            try certs.write("live.key", try certs.read("two.key"))
            try certs.write("live.pem", try certs.read("two-chain.pem") + padding)
            let broker = try #require(server.brokerPID())
            kill(broker, SIGSTOP)
            var resumed = false
            defer { if !resumed { kill(broker, SIGCONT) } }
            var mark = server.logLines.count
            server.signal(SIGHUP)
            let failed = try await server.waitForLog(from: mark, "the failed hand-off") { $0.contains("could not hand TLS generation 2") }
            #expect(failed.contains("generation 1") && failed.contains("stays in force"), "\(failed)")
            kill(broker, SIGCONT)
            resumed = true
            #expect(try await servedCertificate(port: port, certs: certs) == one)
            #expect(!server.logLines[mark...].contains { $0.contains("took TLS generation 2") })

            // The broker cannot make the supervisor go back to an older key: a new broker gets
            // generation 2, the newest the supervisor loaded and checked.
            mark = server.logLines.count
            kill(broker, SIGKILL)
            let again = try await server.waitForLog(from: mark, "the restarted broker's acknowledgement") { $0.contains("took TLS generation") }
            #expect(again.contains("took TLS generation 2"), "\(again)")
            _ = try await server.waitForLog(from: mark, "the restarted broker's ready line") { $0.contains("ready; accepting again") }
            // (Not served here: no client accepts a 400 KB chain.)

            // Fixed files on the next SIGHUP are taken.
            try certs.write("live.pem", try certs.read("two-chain.pem"))
            mark = server.logLines.count
            server.signal(SIGHUP)
            _ = try await server.waitForLog(from: mark, "the acknowledgement of generation 3") { $0.contains("took TLS generation 3") }
            #expect(try await servedCertificate(port: port, certs: certs) == two)
        }
    }

    /// Two distinctive pieces of a P-256 PKCS#8 key file: 16 bytes from the middle of the private
    /// scalar (as every DER form of the key holds it), and the 16 base64 characters of the
    /// file's first line that encode the scalar's first 12 bytes.
    static func keyNeedles(_ path: String) throws -> (scalar: [UInt8], pemText: [UInt8]) {
        let der = try NIOSSLPrivateKey(file: path, format: .pem).derBytes
        // SEC1 ECPrivateKey: 30 77 02 01 01 04 20 <32-byte scalar> …
        guard let start = (0..<(der.count - 40)).first(where: { der[$0..<($0 + 5)].elementsEqual([0x02, 0x01, 0x01, 0x04, 0x20]) }) else {
            throw HarnessError("\(path): no SEC1 private scalar in the key's DER")
        }
        let scalar = Array(der[(start + 5 + 8)..<(start + 5 + 24)])
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        let prefix = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"  // PKCS#8 P-256 header, then the scalar
        guard lines.count > 2, lines[1].hasPrefix(prefix), lines[1].count == 64 else {
            throw HarnessError("\(path) is not a PKCS#8 P-256 PEM key")
        }
        return (scalar, Array(lines[1].utf8.suffix(16)))
    }
}

/// Searches another process's writable private memory for byte strings: /proc/PID/smaps for
/// the mappings (and their VmFlags), /proc/PID/mem to read them. Bounded: at most `maxBytes`
/// in total, read 1 MiB at a time.
enum MemoryScan {
    struct Hit {
        let needle: Int
        let address: UInt
        let flags: [String]
    }

    static func hits(pid: pid_t, needles: [[UInt8]], maxBytes: Int = 2 << 30) throws -> (hits: [Hit], scanned: Int) {
        let smaps = try readProcFile("/proc/\(pid)/smaps")
        var mappings: [(start: UInt, end: UInt, flags: [String])] = []
        var pending: (start: UInt, end: UInt)?
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.contains("-"), !first.hasSuffix(":"), fields.count >= 2 {
                let bounds = first.split(separator: "-").compactMap { UInt($0, radix: 16) }
                let name = fields.count >= 6 ? String(fields[5]) : ""
                let usable = fields[1].hasPrefix("rw") && fields[1].hasSuffix("p") && !["[vvar]", "[vsyscall]", "[vvar_vclock]"].contains(name)
                pending = bounds.count == 2 && usable ? (bounds[0], bounds[1]) : nil
            } else if first == "VmFlags:", let range = pending {
                mappings.append((range.start, range.end, fields.dropFirst().map(String.init)))
                pending = nil
            }
        }
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HarnessError("cannot open /proc/\(pid)/mem: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let longest = needles.map(\.count).max() ?? 0
        let block = 1 << 20
        var buffer = [UInt8](repeating: 0, count: block + longest)
        var hits: [Hit] = []
        var scanned = 0
        for mapping in mappings {
            var offset = mapping.start
            while offset < mapping.end, scanned < maxBytes {
                let length = Int(min(UInt(block + longest), mapping.end - offset))
                let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(Int64(bitPattern: UInt64(offset)))) }
                if count > 0 {
                    scanned += count
                    buffer.withUnsafeBytes { raw in
                        for (index, needle) in needles.enumerated() {
                            for position in find(needle, in: UnsafeRawBufferPointer(rebasing: raw[0..<count]))
                            where position < block {  // the overlap is scanned again with the next block
                                hits.append(Hit(needle: index, address: offset + UInt(position), flags: mapping.flags))
                            }
                        }
                    }
                }
                offset += UInt(block)
            }
        }
        return (hits, scanned)
    }

    /// Every offset of `needle` in `haystack`.
    static func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer) -> [Int] {
        guard let first = needle.first, haystack.count >= needle.count else { return [] }
        var found: [Int] = []
        var index = 0
        let last = haystack.count - needle.count
        while index <= last {
            guard let hit = memchr(haystack.baseAddress! + index, Int32(first), last - index + 1) else { break }
            let position = haystack.baseAddress!.distance(to: UnsafeRawPointer(hit))
            if memcmp(haystack.baseAddress! + position, needle, needle.count) == 0 { found.append(position) }
            index = position + 1
        }
        return found
    }
}
