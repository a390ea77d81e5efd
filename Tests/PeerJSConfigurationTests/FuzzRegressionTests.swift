import PeerJSConfiguration
import Testing

/// Inputs that the libFuzzer target `fuzz-files` (scripts/fuzz.sh) found in the `--config` file
/// reader; each failed before its fix.
@Suite("Configuration file: fuzz regressions")
struct FuzzRegressionTests {
    @Test("a configuration file with CRLF line ends reads like one with LF (fuzz-files)")
    func crlf() throws {
        // Swift reads "\r\n" as one Character, so splitting on "\n" alone put the next line into
        // this line's value: `--host "::\r\nkey = room"`.
        let text = "port = 9000\r\nhost = ::\r\nkey = room\r\nallow_discovery = yes\r\n"
        let file = try ConfigurationFile(text: text, name: "c")
        #expect(file.arguments == ["--port", "9000", "--host", "::", "--key", "room", "--allow_discovery"])
    }

    @Test("the input fuzz-files found: a CRLF line no longer swallows the next line (fuzz-files)")
    func foundByFuzzer() throws {
        let text = "# /etc/peerjs/peerjs.\u{1}rconfUnsaf;'u9000\nhost=-secret     room prkeys\r\ncar::\n"
        #expect(throws: ConfigurationFile.Error.self) { try ConfigurationFile(text: text, name: "c") }
        let file = try ConfigurationFile(text: "host=-secret     room prkeys\r\nkey = \"peerjs\"\n", name: "c")
        #expect(file.arguments == ["--host", "-secret     room prkeys", "--key", "peerjs"])
    }

    @Test("a CRLF configuration file names the right line in its errors (fuzz-files)")
    func crlfLineNumbers() {
        do {
            _ = try ConfigurationFile(text: "port = 1\r\n\r\nnonsense\r\n", name: "c")
            Issue.record("no error")
        } catch {
            #expect("\(error)".hasPrefix("c:3:"))
        }
    }
}
