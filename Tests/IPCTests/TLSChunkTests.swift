import IPC
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
        for chunk in chunks.dropLast() { #expect(try assembler.add(chunk) == nil) }
        #expect(assembler.isIncomplete)
        let material = try #require(try assembler.add(chunks[chunks.count - 1]))
        #expect(material.certificateChainPEM == chain)
        #expect(material.privateKeyDER == key)
        #expect(!assembler.isIncomplete)

        var gap = TLSChunkAssembler()
        _ = try gap.add(chunks[0])
        #expect(throws: IPCError.self) { try gap.add(chunks[2]) }

        var keyFirst = TLSChunkAssembler()
        #expect(throws: IPCError.self) { try keyFirst.add(TLSChunk(generation: 1, kind: .privateKeyDER, index: 0, count: 2, data: [1])) }

        // A new generation (chunk 0) replaces one the sender abandoned half-way.
        var restarted = TLSChunkAssembler()
        _ = try restarted.add(chunks[0])
        let next = try TLSChunk.split(generation: 3, certificateChainPEM: [1], privateKeyDER: [2])
        #expect(try restarted.add(next[0]) == nil)
        let replaced = try #require(try restarted.add(next[1]))
        #expect(replaced.certificateChainPEM == [1] && replaced.privateKeyDER == [2])
    }
}
