import Foundation
import Glibc
import IPC
import PeerJSTesting
import Testing

@Suite("tlsChunk payload and reassembly")
struct TLSChunkTests {
    private let chain = [UInt8](repeating: 0x43, count: 2 * TLSChunk.maxDataLength + 10)
    private let key = [UInt8](repeating: 0x4B, count: 121)

    @Test("a chunk round-trips and every chunk fits the 16 KiB tlsChunk cap")
    func roundTrip() throws {
        let chunks = try TLSChunk.split(generation: 7, certificateChainPEM: chain, privateKeyDER: key)
        #expect(chunks.map(\.kind) == [.certificateChainPEM, .certificateChainPEM, .certificateChainPEM, .privateKeyDER])
        #expect(chunks.map(\.index) == [0, 1, 2, 3])
        #expect(chunks.allSatisfy { $0.count == 4 && $0.generation == 7 })
        for chunk in chunks {
            let payload = try chunk.encodeChecked()
            #expect(payload.count <= FrameType.tlsChunk.maxPayload)
            #expect(try TLSChunk(decoding: payload) == chunk)
        }
    }

    @Test("bad kind, index past count, zero or too many chunks, oversize data and trailing bytes are refused")
    func strictDecode() {
        let good = TLSChunk(generation: 1, kind: .privateKeyDER, index: 0, count: 1, data: [1])
        var badKind = good.encode()
        badKind[4] = 3
        var pastCount = good.encode()
        pastCount[6] = 1  // index 1 of 1
        var zero = good.encode()
        zero[8] = 0  // count 0
        let tooMany = TLSChunk(generation: 1, kind: .privateKeyDER, index: 0, count: TLSChunk.maxCount + 1, data: [1]).encode()
        let oversize = TLSChunk(generation: 1, kind: .privateKeyDER, index: 0, count: 1,
                                data: [UInt8](repeating: 0, count: TLSChunk.maxDataLength + 1)).encode()
        for payload in [badKind, pastCount, zero, tooMany, oversize, good.encode() + [0]] {
            #expect(throws: IPCError.self) { try TLSChunk(decoding: payload) }
        }
    }

    @Test("the assembler returns the chain and key of a whole generation, and refuses gaps and reordering")
    func assembler() throws {
        let chunks = try TLSChunk.split(generation: 2, certificateChainPEM: chain, privateKeyDER: key)
        var assembler = TLSChunkAssembler()
        for chunk in chunks.dropLast() {
            let none = try assembler.add(chunk) == nil
            #expect(none)
        }
        let incomplete = assembler.isIncomplete
        #expect(incomplete)
        guard let material = try assembler.add(chunks[chunks.count - 1]) else {
            Issue.record("the last chunk did not complete the generation")
            return
        }
        #expect(material.generation == 2)
        #expect(material.certificateChainPEM == chain)
        #expect(material.privateKeyDER.withUnsafeBytes { Array($0) } == key)
        let complete = !assembler.isIncomplete
        #expect(complete)

        var gap = TLSChunkAssembler()
        _ = try gap.add(chunks[0])
        #expect(Self.refuses(&gap, chunks[2]))

        var keyFirst = TLSChunkAssembler()
        #expect(Self.refuses(&keyFirst, TLSChunk(generation: 1, kind: .privateKeyDER, index: 0, count: 2, data: [1])))

        // A new generation (chunk 0) replaces one the sender abandoned half-way.
        var restarted = TLSChunkAssembler()
        _ = try restarted.add(chunks[0])
        let next = try TLSChunk.split(generation: 3, certificateChainPEM: [1], privateKeyDER: [2])
        let open = try restarted.add(next[0]) == nil
        #expect(open)
        guard let replaced = try restarted.add(next[1]) else {
            Issue.record("generation 3 did not complete")
            return
        }
        #expect(replaced.certificateChainPEM == [1] && replaced.privateKeyDER.withUnsafeBytes { Array($0) } == [2])
    }

    private static func refuses(_ assembler: inout TLSChunkAssembler, _ chunk: TLSChunk) -> Bool {
        do {
            _ = try assembler.add(chunk)
            return false
        } catch {
            return true
        }
    }

    @Test("issue 16 item 4: the assembled key lives in a mapping of its own that is never dumped, never inherited by fork, and locked; growth keeps the bytes")
    func keyMemory() throws {
        let key = (0..<(3 * TLSChunk.maxDataLength + 5)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let chunks = try TLSChunk.split(generation: 9, certificateChainPEM: chain, privateKeyDER: key)
        var assembler = TLSChunkAssembler()
        var last: TLSChunkAssembler.Material?
        for chunk in chunks {
            last = try assembler.add(TLSChunk(decoding: chunk.encode()))  // as the broker does
        }
        guard let material = last.take() else {
            Issue.record("no material")
            return
        }
        #expect(material.privateKeyDER.withUnsafeBytes { Array($0) } == key)
        let address = material.privateKeyDER.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        let flags = try #require(try Self.vmFlags(containing: address), "the key's mapping is not in /proc/self/smaps")
        #expect(flags.contains("dd"), "MADV_DONTDUMP: \(flags)")
        #expect(flags.contains("wf"), "MADV_WIPEONFORK: \(flags)")
        // (AddressSanitizer's runtime turns mlock into a no-op that succeeds: scripts/sanitize.sh.)
        if material.privateKeyDER.isLocked, ProcessInfo.processInfo.environment["PEERJS_SANITIZER"] == nil {
            #expect(flags.contains("lo"), "mlock: \(flags)")
        }

        // Growing past the first mapping moves the bytes into a new one with the same protections.
        var grown = try SecretBytes(capacity: 10)
        try grown.append(contentsOf: key[0..<10])
        try grown.append(contentsOf: key[10...])
        #expect(grown.withUnsafeBytes { Array($0) } == key)
        let moved = grown.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        #expect(try Self.vmFlags(containing: moved)?.contains("dd") == true)
        grown.removeAll()
        #expect(grown.count == 0)
    }

    /// The VmFlags of the /proc/self/smaps mapping that contains `address`.
    static func vmFlags(containing address: UInt) throws -> [String]? {
        let text = try readProcFile("/proc/self/smaps")
        var inside = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= address && address < bounds[1]
            } else if inside, line.hasPrefix("VmFlags:") {
                return fields.dropFirst().map(String.init)
            }
        }
        return nil
    }
}
