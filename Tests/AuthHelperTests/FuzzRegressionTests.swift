import AuthHelper
import Testing

/// Inputs that the libFuzzer target `fuzz-files` (scripts/fuzz.sh) found; each failed before its fix.
@Suite("Auth helper files: fuzz regressions")
struct FuzzRegressionTests {
    @Test("a users file with CRLF line ends reads like one with LF (fuzz-files)")
    func usersFileCRLF() throws {
        // Swift reads "\r\n" as one Character, so splitting on "\n" alone kept the whole file on
        // one line: bob's token became "bob-secret\r\ncarol" and carol was never a user.
        let file = try UsersFile(text: "alice alice-secret\r\nbob bob-secret room\r\ncarol c-secret\r\n", name: "users")
        #expect(file.users.count == 3)
        #expect(file.users["alice"]?.token == Array("alice-secret".utf8))
        #expect(file.users["bob"]?.token == Array("bob-secret".utf8))
        #expect(file.users["bob"]?.keys == ["room"])
        #expect(file.users["carol"]?.token == Array("c-secret".utf8))
    }

    @Test("a comment on a CRLF line ends at the line end, not at the end of the file (fuzz-files)")
    func usersFileCommentCRLF() throws {
        let file = try UsersFile(text: "bob bob-secret # only rooms\r\ncarol c-secret\r\n", name: "users")
        #expect(file.users["carol"]?.token == Array("c-secret".utf8))
    }

    @Test("a CRLF users file names the right line in its errors (fuzz-files)")
    func usersFileCRLFLineNumbers() {
        do {
            _ = try UsersFile(text: "a b\r\n\r\nlonely\r\n", name: "u")
            Issue.record("no error")
        } catch {
            #expect("\(error)".hasPrefix("u:3:"))
        }
    }
}

extension FuzzRegressionTests {
    @Test("a space before a combining mark still separates fields (fuzz-files' round-trip check)")
    func usersFileSpaceBeforeCombiningMark() throws {
        // " \u{301}" is one Character: split by Characters, "token \u{301}room" was one token
        // and bob's key restriction was lost without an error.
        let file = try UsersFile(text: "bob token \u{301}room\n", name: "users")
        #expect(file.users["bob"]?.token == Array("token".utf8))
        #expect(file.users["bob"]?.keys == ["\u{301}room"])
    }

    @Test("a # before a combining mark still starts a comment (fuzz-files' round-trip check)")
    func usersFileHashBeforeCombiningMark() throws {
        let file = try UsersFile(text: "bob token #\u{301} room\n", name: "users")
        #expect(file.users["bob"]?.keys == [])
    }
}
