import Foundation
import PeerJSTesting
import Testing

/// peerjs-bench, the load generator of BENCHMARKS.md, against the shipped process model (supervisor,
/// broker, JWT auth helper): small runs of each scenario must complete with every peer registered,
/// every message relayed and every session closed, so that a broken load generator cannot pass
/// for a slow server. No figure is asserted (speed is the benchmark's business).
@Suite("peerjs-bench", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct BenchTests {
    typealias T = AuthHelperProcessTests

    /// Runs `peerjs-bench scenario … --json` against `server` and returns its result object.
    static func bench(_ scenario: [String], _ server: ServerProcess, secret: String) async throws -> [String: Any] {
        let arguments = scenario + ["--port", "\(server.port)", "--server-pid", "\(server.pid)",
                                    "--jwt-secret-file", secret, "--timeout", "30", "--json"]
        let (status, output) = try await ServerProcess.run(arguments, binary: "peerjs-bench", timeout: .seconds(45))
        #expect(status == .exited(0), "peerjs-bench \(arguments.joined(separator: " ")): \(output.suffix(5))")
        return try result(output)
    }

    /// The JSON object a `--json` run printed last.
    static func result(_ output: [String]) throws -> [String: Any] {
        let line = try #require(output.last { $0.hasPrefix("{") }, "no JSON result in \(output.suffix(5))")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test("connect, relay and churn: every peer gets OPEN, every message and session completes, no failures")
    func scenarios() async throws {
        let secret = try T.TempFile("a-benchmark-secret-of-at-least-32-bytes\n", name: "jwt.key")
        try await ServerProcess.withServer(["--auth-jwt-key", secret.path]) { server in
            let connect = try await Self.bench(["connect", "--count", "300", "--concurrency", "32", "--hold", "0.2"], server,
                                               secret: secret.path)
            #expect(connect["connected"] as? Int == 300)
            #expect((connect["failures"] as? [String: Int])?.isEmpty == true, "\(connect["failures"] ?? "-")")
            #expect((connect["droppedWhileHeld"] as? Int) == 0)
            // The broker was found through the supervisor and measured.
            #expect((connect["serverHeld"] as? [[String: Any]])?.contains { $0["role"] as? String == "broker" } == true)

            let relay = try await Self.bench(["relay", "--pairs", "8", "--inflight", "2", "--duration", "0.5", "--warmup", "0.2"],
                                             server, secret: secret.path)
            #expect((relay["messages"] as? Int ?? 0) > 0)
            #expect((relay["errors"] as? [String: Int])?.isEmpty == true, "\(relay["errors"] ?? "-")")
            #expect((relay["failures"] as? [String: Int])?.isEmpty == true, "\(relay["failures"] ?? "-")")

            let churn = try await Self.bench(["churn", "--concurrency", "8", "--echoes", "2", "--warmup-sessions", "50",
                                              "--count", "200", "--duration", "20"], server, secret: secret.path)
            #expect(churn["sessions"] as? Int == 200)
            #expect((churn["failures"] as? [String: Int])?.isEmpty == true, "\(churn["failures"] ?? "-")")
        }
    }

    @Test("a server that is not there: every connection is a counted failure, and the run still ends")
    func refused() async throws {
        let port = try freePort()  // bound, noted and closed: nothing listens there
        let (status, output) = try await ServerProcess.run(
            ["connect", "--port", "\(port)", "--count", "20", "--hold", "0", "--timeout", "10", "--json"],
            binary: "peerjs-bench", timeout: .seconds(20))
        #expect(status == .exited(0))
        let result = try Self.result(output)
        #expect(result["connected"] as? Int == 0)
        #expect((result["failures"] as? [String: Int])?["connect: refused"] == 20)
    }
}
