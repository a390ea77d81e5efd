import Foundation
import PeerJSTesting
import Testing

/// The policy program's stderr reaches the helper's log escaped (AuthProgramTests), and no faster
/// than the helper allows: clients choose what the program is asked, so a program that prints
/// what it is asked could otherwise be made to flood the journal (issue 16 review).
@Suite("Policy program log rate", .serialized, .disabled(if: ServerFixture.isExternal, needsOwnServer))
struct PolicyLogTests {
    typealias T = AuthHelperProcessTests

    @Test("a program that writes 1,000 stderr lines at once: at most 100 are logged, one warning says the rest are counted, and it still answers")
    func stderrFloodIsCapped() async throws {
        let program = try T.TempFile(#"""
            #!/usr/bin/env python3
            import json, sys
            for n in range(1000):
                sys.stderr.write("flood line %d\n" % n)
            sys.stderr.flush()
            for line in sys.stdin:
                q = json.loads(line)
                if q.get("type") == "auth":
                    print(json.dumps({"rid": q["rid"], "allow": True}), flush=True)
            """#, name: "flood.py")
        chmod(program.path, 0o755)
        try await ServerProcess.withServer(["--auth-program", program.path]) { server in
            _ = try await T.waitForHelper(server)
            _ = try await server.waitForLog("the rate warning") { $0.contains("the rest are counted, not logged") }
            #expect(try await T.attempt(try T.endpoint(server), id: Unique.id("flood"), token: "t") == ["type": "OPEN"])
            let logged = server.logLines.filter { $0.contains("policy program: flood line") }.count
            #expect(logged == 100, "\(logged) of the program's 1,000 lines were logged")
        }
    }
}
