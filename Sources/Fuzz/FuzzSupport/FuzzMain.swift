#if FUZZING
import CLibFuzzer
#endif
import Glibc

/// The `main` of every fuzz target under `Sources/Fuzz`. It exists because SwiftPM links each
/// executable with a `main` of its own (which displaces libFuzzer's), so the targets start
/// libFuzzer's driver themselves: built by `scripts/fuzz.sh` (`-sanitize=fuzzer -DFUZZING`) this
/// runs libFuzzer with the command line as given; in a plain build, where no libFuzzer is
/// linked, it runs the target once on each file named (or each file in each directory named),
/// so a crash file from CI reproduces with `swift run fuzz-ipc crash-…` and under a debugger.
public enum FuzzMain {
    /// One fuzz input: libFuzzer's `LLVMFuzzerTestOneInput` signature.
    public typealias TestOneInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32

    /// Writes to stderr with write(2) (stdio's `stderr` is a global Swift 6 cannot share).
    static func writeError(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    public static func run(_ test: TestOneInput) -> Never {
        #if FUZZING
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, test))
        #else
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            writeError(
                "usage: \(CommandLine.arguments[0]) FILE|DIR…  (replays inputs; scripts/fuzz.sh builds the fuzzer)\n")
            exit(64)
        }
        var count = 0
        for path in paths {
            for file in files(at: path) {
                guard let bytes = read(file) else {
                    writeError("cannot read \(file)\n")
                    exit(66)
                }
                _ = bytes.withUnsafeBufferPointer { test($0.baseAddress, $0.count) }
                count += 1
            }
        }
        print("replayed \(count) inputs without a crash")
        exit(0)
        #endif
    }

    /// `path` itself, or the regular files directly inside it when it is a directory.
    private static func files(at path: String) -> [String] {
        guard let directory = opendir(path) else { return [path] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if !name.hasPrefix(".") { names.append(path + "/" + name) }
        }
        return names.sorted()
    }

    private static func read(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { return nil }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
        }
    }
}
