import AuthHelper
import FuzzSupport
import PeerJSConfiguration

/// libFuzzer's entry for the text peerjs reads from files and from the auth helper's policy
/// program. The first byte picks the reader (modulo 3): 0, a users file (`--auth-users`), which
/// must read the same once written back out; 1, one answer line of the policy program
/// (`JSONLine.parseObject`), whose string fields must survive `JSONLine.object`; 2, a `--config`
/// file, whose arguments must come back unchanged from the file they are written back as.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzFiles(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let all = UnsafeRawBufferPointer(start: data, count: size)
    guard let selector = all.first else { return 0 }
    let text = String(decoding: all.dropFirst(), as: UTF8.self)
    switch selector % 3 {
    case 0: checkUsersFile(text)
    case 1: checkJSONLine(text)
    default: checkConfigurationFile(text)
    }
    return 0
}

@main
enum FuzzFiles {
    static func main() { FuzzMain.run(fuzzFiles) }
}

func checkUsersFile(_ text: String) {
    guard let file = try? UsersFile(text: text, name: "users") else { return }
    // Written back one user a line, the file must read the same.
    var lines: [String] = []
    for (id, entry) in file.users.sorted(by: { $0.key < $1.key }) {
        let token = String(decoding: entry.token, as: UTF8.self)
        for field in [id, token] + entry.keys {
            precondition(
                !field.isEmpty && !field.unicodeScalars.contains(where: { " \t\r\n#".unicodeScalars.contains($0) }),
                "a users-file field holds a separator: \(field.debugDescription)")
        }
        lines.append(([id, token] + entry.keys.sorted()).joined(separator: " "))
    }
    guard let again = try? UsersFile(text: lines.joined(separator: "\n"), name: "again"), again == file else {
        fatalError("a users file does not survive being written back: \(lines)")
    }
}

func checkJSONLine(_ line: String) {
    guard let fields = JSONLine.parseObject(line) else { return }
    var strings: [(String, String)] = []
    for (name, value) in fields {
        if case .string(let text) = value { strings.append((name, text)) }
    }
    let written = JSONLine.object(strings)
    guard let again = JSONLine.parseObject(written) else {
        fatalError("JSONLine.object wrote what it cannot read: \(written)")
    }
    for (name, text) in strings {
        precondition(again[name] == .string(text), "JSONLine changed \(name.debugDescription)")
    }
    precondition(again.count == strings.count)
}

func checkConfigurationFile(_ text: String) {
    guard let file = try? ConfigurationFile(text: text, name: "peerjs.conf") else { return }
    // Written back one setting a line (values quoted), the file must give the same arguments.
    var lines: [String] = []
    var arguments = file.arguments[...]
    while let flag = arguments.popFirst() {
        precondition(flag.hasPrefix("--"), "argument \(flag.debugDescription) is not a flag")
        if let equals = flag.firstIndex(of: "=") {
            lines.append("\(flag.dropFirst(2)[..<equals]) = \"\(flag[flag.index(after: equals)...])\"")
        } else if ConfigurationFile.switchKeys.contains(String(flag.dropFirst(2))) {
            lines.append("\(flag.dropFirst(2)) = true")
        } else {
            guard let value = arguments.popFirst() else { fatalError("\(flag) has no value") }
            // A lone CR is data here (as in the users file, only LF and CRLF end a line).
            precondition(!value.unicodeScalars.contains("\n"), "a value holds a line end: \(value.debugDescription)")
            lines.append("\(flag.dropFirst(2)) = \"\(value)\"")
        }
    }
    guard let again = try? ConfigurationFile(text: lines.joined(separator: "\n"), name: "again"),
        again.arguments == file.arguments
    else {
        fatalError("a configuration file does not survive being written back: \(lines)")
    }
}
