import Glibc
@testable import Sandbox
import Testing

/// The root supervisor's creation of the broker's chroot directory (issue 16 item 3): nothing it
/// does may reach through a symlink, even one put in place while it works.
@Suite("Chroot directory creation", .serialized)
struct EmptyRootTests {
    /// A fresh directory under /tmp with a `target` directory (mode 0755, owned by nobody) in it.
    private func scratch() -> (base: String, target: String) {
        var template = Array("/tmp/peerjs-emptyroot.XXXXXX".utf8CString)
        let base = String(cString: mkdtemp(&template)!)
        let target = base + "/target"
        mkdir(target, 0o755)
        chmod(target, 0o755)
        chown(target, 65534, 65534)
        return (base, target)
    }

    private func remove(_ base: String) {
        for name in ["root", "target"] {
            unlink(base + "/" + name)
            rmdir(base + "/" + name)
        }
        rmdir(base)
    }

    @Test("a missing directory is created root-owned, mode 0555, empty, and then passes the chroot checks", .enabled(if: geteuid() == 0, "a root-owned directory needs root"))
    func creates() throws {
        let (base, _) = scratch()
        defer { remove(base) }
        let path = base + "/root"
        #expect(try PrivilegeDrop.createEmptyRoot(path))
        var info = stat()
        #expect(lstat(path, &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFDIR && info.st_mode & 0o7777 == 0o555 && info.st_uid == 0 && info.st_gid == 0)
        #expect(try PrivilegeDrop.checkEmptyRoot(path))
        #expect(try PrivilegeDrop.createEmptyRoot(path) == false, "an existing directory is left as it is")
    }

    @Test("the new directory replaced by a symlink between mkdir and the mode change: refused, the symlink's target keeps its mode and owner",
          .enabled(if: geteuid() == 0, "a root-owned directory needs root"))
    func racedSymlink() throws {
        let (base, target) = scratch()
        defer { remove(base) }
        let path = base + "/root"
        #expect(throws: SandboxError(.chroot, "")) {
            try PrivilegeDrop.createEmptyRoot(path) {
                rmdir(path)
                symlink(target, path)
            }
        }
        var info = stat()
        #expect(stat(target, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o755, "target mode \(String(info.st_mode & 0o7777, radix: 8))")
        #expect(info.st_uid == 65534 && info.st_gid == 65534, "target owner \(info.st_uid):\(info.st_gid)")
        #expect(throws: SandboxError(.chroot, "")) { try PrivilegeDrop.checkEmptyRoot(path) }
    }

    @Test("a symlink already at the path (to a directory, or dangling) is never followed or changed")
    func existingSymlink() throws {
        let (base, target) = scratch()
        defer { remove(base) }
        let path = base + "/root"
        for destination in [target, base + "/nothing"] {
            unlink(path)
            symlink(destination, path)
            #expect(try PrivilegeDrop.createEmptyRoot(path) == false)
            #expect(throws: SandboxError(.chroot, "")) { try PrivilegeDrop.checkEmptyRoot(path) }
        }
        var info = stat()
        #expect(stat(target, &info) == 0 && info.st_mode & 0o7777 == 0o755)
        #expect(access(base + "/nothing", F_OK) != 0)
    }
}
