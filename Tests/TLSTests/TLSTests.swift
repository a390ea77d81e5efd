import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import PeerJSTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 5: HTTPS and WSS with the key and certificate read by the supervisor and handed to the
/// broker over IPC, against the real binary and a chain made by the openssl CLI per test.
@Suite("TLS (PROTOCOL.md §7.13)", .serialized)
struct TLSTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    private func withGroup<T>(_ body: (any EventLoopGroup) throws -> T) throws -> T {
        defer { try? group.syncShutdownGracefully() }
        return try body(group)
    }

    /// Two peers register over wss:// and relay an OFFER; returns both connections.
    private func registerPair(port: Int, tls: TLSConfiguration, group: any EventLoopGroup, prefix: String) throws -> (RawClient, RawClient) {
        let a = try RawClient.connect(port: port, tls: tls, group: group)
        try a.upgrade(id: "\(prefix)a")
        #expect(try a.readText().contains("\"OPEN\""))
        let b = try RawClient.connect(port: port, tls: tls, group: group)
        try b.upgrade(id: "\(prefix)b")
        #expect(try b.readText().contains("\"OPEN\""))
        return (a, b)
    }

    private func relay(from a: RawClient, _ aID: String, to b: RawClient, _ bID: String, type: String) throws {
        try a.sendText(#"{"type":"\#(type)","dst":"\#(bID)","payload":{"sdp":"v=0"}}"#)
        let received = try b.readText()
        #expect(received.contains("\"\(type)\""))
        #expect(received.contains("\"src\":\"\(aID)\""))
    }

    @Test("§7.13 --sslkey/--sslcert make --port TLS: wss:// signalling, HTTPS GET /{key}/id, ALPN http/1.1, plain HTTP refused without harm")
    func tlsOnPort() async throws {
        try await offPool {
            let certs = try CertificateDirectory()
            try certs.makeLeaf("leaf")
            let server = try PeerJSProcess.start(["--port", "0", "--sslkey", certs.file("leaf.key"), "--sslcert", certs.file("leaf-chain.pem")])
            defer { server.stop() }
            let port = try server.port("https")
            try withGroup { group in
                let tls = try certs.clientTLS()

                let https = try RawClient.connect(port: port, tls: tls, group: group)
                #expect(try https.sink.waitHandshake() == "http/1.1")
                let id = try https.get("/peerjs/id")
                #expect(id.status == 200)
                #expect(!id.body.isEmpty)

                let (a, b) = try registerPair(port: port, tls: tls, group: group, prefix: "p")
                try relay(from: a, "pa", to: b, "pb", type: "OFFER")

                // Plain HTTP on the TLS port: the connection is closed, no HTTP answer, nothing else hurt.
                let plain = try RawClient.connect(port: port, tls: nil, group: group)
                try plain.send("GET /peerjs/id HTTP/1.1\r\nHost: localhost\r\n\r\n")
                let answer = try plain.sink.waitClosed()
                #expect(!String(decoding: answer, as: UTF8.self).contains("HTTP/1.1 200"))

                // TLS 1.1 is refused.
                var old = tls
                old.minimumTLSVersion = .tlsv1
                old.maximumTLSVersion = .tlsv11
                let legacy = try RawClient.connect(port: port, tls: old, group: group)
                #expect(throws: (any Error).self) { try legacy.sink.waitHandshake() }

                try relay(from: b, "pb", to: a, "pa", type: "ANSWER")
                let again = try RawClient.connect(port: port, tls: tls, group: group)
                #expect(try again.get("/").status == 200)
                a.close()
                b.close()
            }
            #expect(server.stop() == 0)
        }
    }

    @Test("§7.13 --https-port (on --https-host) adds a TLS listener beside the plain --port; each refuses the other protocol")
    func plainAndTLSListeners() async throws {
        try await offPool {
            let certs = try CertificateDirectory()
            try certs.makeLeaf("leaf")
            // Through the configuration file, as an operator would write it.
            try certs.write("peerjs.conf", """
                port = 0
                https_port = 0
                https_host = 127.0.0.2
                sslkey = \(certs.file("leaf.key"))
                sslcert = \(certs.file("leaf-chain.pem"))
                """)
            let server = try PeerJSProcess.start(["--config", certs.file("peerjs.conf")])
            defer { server.stop() }
            let httpPort = try server.port("http")
            let httpsPort = try server.port("https")
            #expect(try server.log.waitForLine("the https listening line") { $0.contains("(https, TLS)") }.contains("listening on 127.0.0.2 "))
            try withGroup { group in
                let tls = try certs.clientTLS()
                #expect(try RawClient.connect(port: httpPort, tls: nil, group: group).get("/peerjs/id").status == 200)
                #expect(try RawClient.connect(host: "127.0.0.2", port: httpsPort, tls: tls, group: group).get("/peerjs/id").status == 200)

                let tlsOnPlain = try RawClient.connect(port: httpPort, tls: tls, group: group)
                #expect(throws: (any Error).self) { try tlsOnPlain.sink.waitHandshake() }
                let plainOnTLS = try RawClient.connect(host: "127.0.0.2", port: httpsPort, tls: nil, group: group)
                try plainOnTLS.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                #expect(!String(decoding: try plainOnTLS.sink.waitClosed(), as: UTF8.self).hasPrefix("HTTP/1.1 200"))

                // Both kinds of peers meet in the same registry.
                let a = try RawClient.connect(port: httpPort, tls: nil, group: group)
                try a.upgrade(id: "plain")
                #expect(try a.readText().contains("\"OPEN\""))
                let b = try RawClient.connect(host: "127.0.0.2", port: httpsPort, tls: tls, group: group)
                try b.upgrade(id: "secure")
                #expect(try b.readText().contains("\"OPEN\""))
                try relay(from: a, "plain", to: b, "secure", type: "OFFER")
                try relay(from: b, "secure", to: a, "plain", type: "ANSWER")
            }
        }
    }

    @Test("§7.13 SIGHUP re-reads key and certificate: TLS peers stay connected, a new connection sees the new certificate; a restarted broker keeps it")
    func reloadKeepsPeers() async throws {
        try await offPool {
            let certs = try CertificateDirectory()
            try certs.makeLeaf("one")
            try certs.makeLeaf("two")
            try certs.goLive("one")
            let server = try PeerJSProcess.start(live: certs)
            defer { server.stop() }
            let port = try server.port("https")
            let first = try certs.certificate("one.pem")
            let second = try certs.certificate("two.pem")
            #expect(try first.toDERBytes() != second.toDERBytes())
            try withGroup { group in
                let tls = try certs.clientTLS()
                let (a, b) = try registerPair(port: port, tls: tls, group: group, prefix: "r")
                #expect(try a.peerCertificate()?.toDERBytes() == first.toDERBytes())

                // certbot-style renewal: same paths, new contents, then SIGHUP.
                try certs.goLive("two")
                let mark = server.log.snapshot.count
                server.signal(SIGHUP)
                _ = try server.log.waitForLine(from: mark, "the broker's reload line") { $0.contains("TLS certificate and key reloaded; new handshakes use them") }

                let fresh = try RawClient.connect(port: port, tls: tls, group: group)
                #expect(try fresh.peerCertificate()?.toDERBytes() == second.toDERBytes())
                #expect(try fresh.get("/peerjs/id").status == 200)

                // The peers connected before the reload are still there and still relay.
                try relay(from: a, "ra", to: b, "rb", type: "OFFER")
                try relay(from: b, "rb", to: a, "ra", type: "ANSWER")

                // A broken file on the next SIGHUP keeps the running certificate.
                try certs.write("live.key", "not a key\n")
                let mark2 = server.log.snapshot.count
                server.signal(SIGHUP)
                _ = try server.log.waitForLine(from: mark2, "the failed-reload line") { $0.contains("TLS reload failed") && $0.contains("live.key") }
                let still = try RawClient.connect(port: port, tls: tls, group: group)
                #expect(try still.peerCertificate()?.toDERBytes() == second.toDERBytes())

                // A broker that dies is restarted with the material in force (the supervisor keeps it).
                let mark3 = server.log.snapshot.count
                kill(try server.brokerPID(), SIGKILL)
                _ = try server.log.waitForLine(from: mark3, "the restarted broker's ready line") { $0.contains("ready; accepting again") }
                let afterRestart = try RawClient.connect(port: port, tls: tls, group: group)
                #expect(try afterRestart.peerCertificate()?.toDERBytes() == second.toDERBytes())
                #expect(try afterRestart.get("/peerjs/id").status == 200)
            }
        }
    }

    @Test("§7.13 socket activation: the socket named https is TLS, http is plain; https without key material is a startup error",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate")))
    func socketActivation() async throws {
        try await offPool {
            let certs = try CertificateDirectory()
            try certs.makeLeaf("leaf")
            let (httpPort, httpsPort) = (try freePort(), try freePort())
            let launcher = ["/usr/bin/systemd-socket-activate", "-l", "127.0.0.1:\(httpPort)", "-l", "127.0.0.1:\(httpsPort)",
                            "--fdname=http:https"]
            // systemd-socket-activate starts peerjs at the first connection; that one waits in the backlog.
            let server = try PeerJSProcess.spawn(["--sslkey", certs.file("leaf.key"), "--sslcert", certs.file("leaf-chain.pem")],
                                                 launcher: launcher)
            defer { server.stop() }
            _ = try server.log.waitForLine("systemd-socket-activate's second socket") { $0.contains("as 4.") }
            try withGroup { group in
                let tls = try certs.clientTLS()
                let first = try RawClient.connect(port: httpsPort, tls: tls, group: group)
                #expect(try first.get("/peerjs/id").status == 200)
                #expect(try server.port("https") == httpsPort)
                #expect(try server.port("http") == httpPort)
                #expect(try RawClient.connect(port: httpPort, tls: nil, group: group).get("/peerjs/id").status == 200)
                let tlsOnPlain = try RawClient.connect(port: httpPort, tls: tls, group: group)
                #expect(throws: (any Error).self) { try tlsOnPlain.sink.waitHandshake() }
            }

            let port = try freePort()
            let bare = try PeerJSProcess.spawn([], launcher: ["/usr/bin/systemd-socket-activate", "-l", "127.0.0.1:\(port)", "--fdname=https"])
            _ = try bare.log.waitForLine("systemd-socket-activate's socket") { $0.contains("as 3.") }
            let trigger = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(trigger) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(trigger, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            #expect(connected == 0)
            #expect(try bare.waitForExit() == 78)
            #expect(bare.log.snapshot.contains { $0.contains("named `https`") && $0.contains("--sslkey") })
            #expect(!bare.log.snapshot.contains { $0.contains("Started PeerServer") })
        }
    }

    @Test("§7.13 a client that stalls in the handshake is dropped at the handshake deadline")
    func handshakeDeadline() async throws {
        try await offPool {
            let certs = try CertificateDirectory()
            try certs.makeLeaf("leaf")
            // 2000 ms: the good client below must finish its own handshake within it on a loaded machine.
            let server = try PeerJSProcess.start(["--port", "0", "--handshake_timeout", "2000",
                                                  "--sslkey", certs.file("leaf.key"), "--sslcert", certs.file("leaf-chain.pem")])
            defer { server.stop() }
            let port = try server.port("https")
            try withGroup { group in
                let stalled = try RawClient.connect(port: port, tls: nil, group: group)
                try stalled.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])  // the start of a ClientHello, then nothing
                let start = Date()
                _ = try stalled.sink.waitClosed(timeout: 7)
                #expect(Date().timeIntervalSince(start) < 6)
                #expect(try RawClient.connect(port: port, tls: try certs.clientTLS(), group: group).get("/peerjs/id").status == 200)
            }
        }
    }

    @Test("§7.13 key formats: SEC1 and an encrypted PKCS#8 key with --sslkey-passphrase-file; an expired certificate only warns")
    func keyFormatsAndExpiry() async throws {
        try await offPool {
            let certs = try CertificateDirectory()
            try certs.makeLeaf("leaf")
            try certs.makeLeaf("old", days: -1)
            try certs.openssl(["pkey", "-in", certs.file("leaf.key"), "-traditional", "-out", certs.file("sec1.key")])
            #expect(try certs.read("sec1.key").hasPrefix("-----BEGIN EC PRIVATE KEY-----"))
            try certs.openssl(["pkey", "-in", certs.file("leaf.key"), "-aes256", "-passout", "pass:s3cret", "-out", certs.file("enc.key")])
            try certs.write("pass", "s3cret\n")
            try withGroup { group in
                let tls = try certs.clientTLS()
                for arguments in [["--sslkey", certs.file("sec1.key")],
                                  ["--sslkey", certs.file("enc.key"), "--sslkey-passphrase-file", certs.file("pass")]] {
                    let server = try PeerJSProcess.start(["--port", "0", "--sslcert", certs.file("leaf-chain.pem")] + arguments)
                    #expect(try RawClient.connect(port: try server.port("https"), tls: tls, group: group).get("/peerjs/id").status == 200)
                    #expect(server.stop() == 0)
                }
                let expired = try PeerJSProcess.start(["--port", "0", "--sslkey", certs.file("old.key"), "--sslcert", certs.file("old-chain.pem")])
                defer { expired.stop() }
                _ = try expired.log.waitForLine("the expiry warning") { $0.contains("warning") && $0.contains("old-chain.pem") && $0.contains("expired") }
                // Verification would refuse it; this part is about the server still serving it.
                var lax = tls
                lax.certificateVerification = .none
                #expect(try RawClient.connect(port: try expired.port("https"), tls: lax, group: group).get("/peerjs/id").status == 200)
            }
        }
    }

    @Test("§7.13 bad TLS files: a one-line startup error naming the file, before anything listens")
    func startupErrors() async throws {
        try await offPool {
            let certs = try CertificateDirectory()
            try certs.makeLeaf("leaf")
            try certs.makeLeaf("other")
            try certs.openssl(["pkey", "-in", certs.file("leaf.key"), "-aes256", "-passout", "pass:right", "-out", certs.file("enc.key")])
            try certs.write("wrong", "wrong\n")
            try certs.write("garbage.pem", "hello\n")
            let chain = certs.file("leaf-chain.pem")
            let cases: [(arguments: [String], status: Int32, mentions: [String])] = [
                (["--sslkey", certs.file("missing.key"), "--sslcert", chain], 78, [certs.file("missing.key"), "No such file"]),
                (["--sslkey", certs.file("other.key"), "--sslcert", chain], 78, [certs.file("other.key"), chain, "does not match"]),
                (["--sslkey", certs.file("enc.key"), "--sslcert", chain, "--sslkey-passphrase-file", certs.file("wrong")], 78,
                 [certs.file("enc.key"), "wrong passphrase"]),
                (["--sslkey", certs.file("enc.key"), "--sslcert", chain], 78, [certs.file("enc.key"), "--sslkey-passphrase-file"]),
                (["--sslkey", certs.file("leaf.key"), "--sslcert", certs.file("garbage.pem")], 78, [certs.file("garbage.pem"), "no PEM certificate"]),
                (["--sslkey", certs.file("leaf.key")], 64, ["--sslkey and --sslcert"]),
                (["--https-port", "0"], 64, ["--https-port needs --sslkey"]),
            ]
            for (arguments, status, mentions) in cases {
                let process = try PeerJSProcess.spawn(["--host", "127.0.0.1", "--port", "0"] + arguments)
                #expect(try process.waitForExit() == status, "\(arguments)")
                let output = process.log.snapshot
                #expect(!output.contains { $0.contains("listening on") || $0.contains("Started PeerServer") }, "\(output)")
                for text in mentions {
                    #expect(output.contains { $0.contains(text) }, "\(arguments): expected \(text) in \(output)")
                }
            }
        }
    }
}
