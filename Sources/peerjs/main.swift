import ArgumentParser
import Glibc

// Parse, then run the chosen role. Usage errors are one line on stderr with status 64.
do {
    let arguments = Array(CommandLine.arguments.dropFirst())
    let command = try PeerJSCommand.parseWithConfiguration(arguments)
    try command.run(arguments: arguments)
} catch {
    let code = PeerJSCommand.exitCode(for: error)
    if error is ExitCode {
        // A role finished with this status; it has logged why.
    } else if code == .success {
        print(PeerJSCommand.fullMessage(for: error))
    } else {
        let message = PeerJSCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
        let line = Array("peerjs: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
    exit(code.rawValue)
}
