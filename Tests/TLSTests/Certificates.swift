import Foundation
import NIOSSL
import PeerJSTesting

#if canImport(Glibc)
    import Glibc
#endif

/// A temporary directory with a CA and leaf certificates made by the openssl CLI, removed on
/// deinit: the TLS tests' chain, fresh per test.
final class CertificateDirectory: @unchecked Sendable {
    let path: String

    private init(path: String) {
        self.path = path
    }

    /// A new directory holding the CA (`ca.key`, `ca.pem`).
    static func make() async throws -> CertificateDirectory {
        var template = Array("/tmp/peerjs-tls-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp failed") }
        let certs = CertificateDirectory(path: String(cString: made))
        try await certs.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", certs.file("ca.key"), "-out", certs.file("ca.pem"), "-days", "2", "-subj", "/CN=peerjs test CA"])
        try certs.write("ext.cnf", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        return certs
    }

    /// A new directory with the leaves `one` and `two`, `one` live: the reload tests' start.
    static func withTwoLeaves() async throws -> CertificateDirectory {
        let certs = try await make()
        try await certs.makeLeaf("one")
        try await certs.makeLeaf("two")
        try certs.goLive("one")
        return certs
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: file(name), atomically: false, encoding: .utf8)
    }

    func read(_ name: String) throws -> String {
        try String(contentsOfFile: file(name), encoding: .utf8)
    }

    /// Makes `live.key` and `live.pem` the key and chain of leaf `name`: the files a reload test
    /// starts the server on (``liveArguments``) and rewrites before a SIGHUP.
    func goLive(_ name: String) throws {
        try write("live.key", try read("\(name).key"))
        try write("live.pem", try read("\(name)-chain.pem"))
    }

    /// Makes `<name>.key` (PKCS#8, P-256), `<name>.pem` (leaf signed by the CA) and
    /// `<name>-chain.pem` (leaf then CA). `days` may be negative: an expired certificate.
    func makeLeaf(_ name: String, days: Int = 2) async throws {
        try await openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", file("\(name).key"),
                     "-out", file("\(name).csr"), "-subj", "/CN=localhost"])
        try await openssl(["x509", "-req", "-in", file("\(name).csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"),
                     "-set_serial", String(Int.random(in: 1000...1_000_000_000)), "-days", String(days),
                     "-extfile", file("ext.cnf"), "-out", file("\(name).pem")])
        try write("\(name)-chain.pem", try read("\(name).pem") + read("ca.pem"))
    }

    func openssl(_ arguments: [String]) async throws {
        let (status, output) = try await ChildProcess.run("/usr/bin/openssl", arguments)
        guard status == .exited(0) else {
            throw HarnessError("openssl \(arguments.joined(separator: " ")) failed (\(status)): \(output.joined(separator: "\n"))")
        }
    }

    func certificate(_ name: String) throws -> NIOSSLCertificate {
        guard let first = try NIOSSLCertificate.fromPEMFile(file(name)).first else { throw HarnessError("no certificate in \(name)") }
        return first
    }

    /// A client configuration that trusts only this directory's CA.
    func clientTLS() throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates([try certificate("ca.pem")])
        configuration.applicationProtocols = ["http/1.1"]
        return configuration
    }
}

extension CertificateDirectory {
    /// The flags of a TLS server serving `live.key` and `live.pem` (see ``goLive(_:)``).
    var liveArguments: [String] { ["--sslkey", file("live.key"), "--sslcert", file("live.pem")] }
}
