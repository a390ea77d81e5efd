import CShim
import Glibc

/// The bytes of a TLS private key, in memory of their own, so that the key exists in exactly
/// one place per process and that place is never written to swap or a core dump and is zeroed
/// before it is given back: Swift arrays are freed (and grown) by the allocator without being
/// wiped, so a key that travelled through a few of them stayed readable in freed heap blocks
/// for the life of the process (issue 16 item 4).
///
/// The mapping is anonymous and page-aligned (mmap), excluded from core dumps
/// (`MADV_DONTDUMP`), kept out of child processes (`MADV_WIPEONFORK`) and locked in RAM (mlock;
/// when RLIMIT_MEMLOCK does not allow it the bytes still work, ``isLocked`` is false). Growing
/// copies into a new mapping and wipes the old one; dropping the value wipes and unmaps it. The
/// wipe is `explicit_bzero`, which the optimiser cannot remove. `~Copyable` (like ``OwnedFD``),
/// so no silent copy of the key can exist; the address is kept as an integer so the type is
/// `Sendable` without `@unchecked`.
/// - Parameters:
///   - count: how many bytes are held.
///   - isLocked: whether mlock succeeded for the current mapping.
public struct SecretBytes: ~Copyable, Sendable {
    private var address: UInt
    private var capacity: Int
    public private(set) var count: Int
    public private(set) var isLocked: Bool

    /// An empty buffer with room for at least `capacity` bytes (one page at least).
    public init(capacity: Int = 1) throws(IPCError) {
        let mapped = try Self.map(capacity)
        address = mapped.address
        self.capacity = mapped.size
        count = 0
        isLocked = mapped.locked
    }

    /// A buffer holding a copy of `bytes`; `bytes` is wiped (it was the caller's last copy).
    public init(wiping bytes: inout [UInt8]) throws(IPCError) {
        defer { SecretBytes.wipe(&bytes) }
        let mapped = try Self.map(bytes.count)
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress, !source.isEmpty {
                memcpy(UnsafeMutableRawPointer(bitPattern: mapped.address)!, base, source.count)
            }
        }
        address = mapped.address
        capacity = mapped.size
        count = bytes.count
        isLocked = mapped.locked
    }

    /// Appends `bytes`, moving to a larger mapping (and wiping the old one) when needed.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) throws(IPCError) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        if count + bytes.count > capacity {
            let mapped = try Self.map(max(2 * capacity, count + bytes.count))
            if count > 0 {
                memcpy(UnsafeMutableRawPointer(bitPattern: mapped.address)!, UnsafeRawPointer(bitPattern: address)!, count)
            }
            Self.unmap(address, capacity)
            address = mapped.address
            capacity = mapped.size
            isLocked = mapped.locked
        }
        memcpy(UnsafeMutableRawPointer(bitPattern: address)! + count, source, bytes.count)
        count += bytes.count
    }

    /// Appends `bytes` (an array, or a slice of one: `array[...]`).
    public mutating func append(contentsOf bytes: ArraySlice<UInt8>) throws(IPCError) {
        var failure: IPCError?
        bytes.withUnsafeBytes { buffer in
            do throws(IPCError) { try append(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Reads the bytes in place; `body` must not keep the pointer.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: address), count: count))
    }

    /// Zeroes the bytes held and empties the buffer (the mapping stays).
    public mutating func removeAll() {
        if let base = UnsafeMutableRawPointer(bitPattern: address) { explicit_bzero(base, count) }
        count = 0
    }

    deinit {
        Self.unmap(address, capacity)
    }

    /// Overwrites `bytes` with zeros (explicit_bzero, which the optimiser keeps) in place, for a
    /// secret that had to live in an array for a moment (an API that takes `[UInt8]`). The
    /// array's own buffer is wiped only when it is not shared; the caller makes sure it is not.
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            explicit_bzero(base, buffer.count)
        }
    }

    /// For a process about to hold a decrypted private key: no core dump, no ptrace and no
    /// /proc/PID/mem by its own user (prctl PR_SET_DUMPABLE 0, which also makes its /proc files
    /// root's), and RLIMIT_CORE 0 (soft and hard, inherited by children started afterwards).
    public static func protectProcess() throws(IPCError) {
        guard cshim_protect_secrets() == 0 else {
            throw IPCError.system("prctl(PR_SET_DUMPABLE, 0) / setrlimit(RLIMIT_CORE, 0) before reading the TLS key")
        }
    }

    // MARK: - Mappings

    private static func map(_ wanted: Int) throws(IPCError) -> (address: UInt, size: Int, locked: Bool) {
        let page = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))
        let size = max(page, (wanted + page - 1) / page * page)
        var locked: Int32 = 0
        guard let base = cshim_secret_map(size, &locked) else {
            throw IPCError.system("mmap(\(size) bytes for key material)")
        }
        return (UInt(bitPattern: base), size, locked != 0)
    }

    private static func unmap(_ address: UInt, _ size: Int) {
        cshim_secret_unmap(UnsafeMutableRawPointer(bitPattern: address), size)
    }
}
