import Glibc

/// The payload of a `tlsChunk` frame: one numbered piece of the TLS material (certificate chain
/// and private key) that the supervisor read from disk, so the broker can serve TLS without ever
/// opening a file, and a chain larger than one frame still travels in frames of bounded size.
///
/// One *generation* is one load of the material (at start, then one per SIGHUP): `count` chunks
/// numbered `0..<count`, sent in order, all the certificate-chain chunks first, then all the
/// private-key chunks. The receiver concatenates the data of each kind (see
/// ``TLSChunkAssembler``). At start the chunks come before `hello`, which ends the setup phase,
/// so the broker builds its TLS context before it sends `ready`; after a reload they may come
/// at any time between connections.
/// - Parameters:
///   - generation: which load this chunk belongs to; a new generation starts at index 0.
///   - kind: what the data is a piece of.
///   - index: this chunk's position in its generation.
///   - count: how many chunks the generation has (1 to ``maxCount``).
///   - data: at most ``maxDataLength`` bytes.
public struct TLSChunk: IPCMessage {
    @inlinable public static var frameType: FrameType { .tlsChunk }

    /// What a chunk's data is a piece of.
    public enum Kind: UInt8, Sendable {
        /// The certificate chain as PEM text, leaf first (the `--sslcert` file as read).
        case certificateChainPEM = 1
        /// The private key as unencrypted DER (the supervisor decrypts it; the passphrase stays there).
        case privateKeyDER = 2
    }

    /// 15 KiB: with the 13 bytes of fields, a chunk stays under the 16 KiB `tlsChunk` cap.
    public static let maxDataLength = 15 * 1024
    /// At most 64 chunks (960 KiB) per generation.
    public static let maxCount: UInt16 = 64

    public var generation: UInt32
    public var kind: Kind
    public var index: UInt16
    public var count: UInt16
    public var data: [UInt8]

    public init(generation: UInt32, kind: Kind, index: UInt16, count: UInt16, data: [UInt8]) {
        self.generation = generation
        self.kind = kind
        self.index = index
        self.count = count
        self.data = data
    }

    public init(decoding payload: [UInt8]) throws(IPCError) {
        var r = PayloadReader(payload)
        generation = try r.readUInt32()
        let rawKind = try r.readUInt8()
        guard let kind = Kind(rawValue: rawKind) else {
            throw IPCError(.malformedPayload, "tlsChunk kind \(rawKind) is not 1 (certificate chain) or 2 (private key); the peer is broken, close the channel")
        }
        self.kind = kind
        index = try r.readUInt16()
        count = try r.readUInt16()
        guard count >= 1, count <= Self.maxCount, index < count else {
            throw IPCError(.malformedPayload, "tlsChunk \(index) of \(count) is out of range (1 to \(Self.maxCount) chunks); the peer is broken, close the channel")
        }
        data = try r.readBytes(maxLength: Self.maxDataLength)
        try r.finish()
    }

    /// The payload, after checking the fields' ranges directly: decoding it again would leave one
    /// more copy of key bytes in freed memory.
    public func encodeChecked() throws(IPCError) -> [UInt8] {
        guard count >= 1, count <= Self.maxCount, index < count, data.count <= Self.maxDataLength else {
            throw IPCError(.oversize, "tlsChunk \(index) of \(count) with \(data.count) bytes is out of range (1 to \(Self.maxCount) chunks of at most \(Self.maxDataLength) bytes)")
        }
        return encode()
    }

    public func encode() -> [UInt8] {
        var w = PayloadWriter(reservingCapacity: 13 + data.count)
        w.writeUInt32(generation)
        w.writeUInt8(kind.rawValue)
        w.writeUInt16(index)
        w.writeUInt16(count)
        w.writeBytes(data)
        return w.bytes
    }

    /// Splits one load of material into the chunks of `generation`: the chain first, then the
    /// key. Throws ``IPCError/Code/oversize`` when it needs more than ``maxCount`` chunks. The
    /// key chunks' `data` is a copy of the key: wipe it (``wipe(_:)``) once sent.
    public static func split(generation: UInt32, certificateChainPEM: [UInt8], privateKeyDER: borrowing SecretBytes) throws(IPCError) -> [TLSChunk] {
        try privateKeyDER.withUnsafeBytes { (key) throws(IPCError) in
            try split(generation: generation, certificateChainPEM: certificateChainPEM, key: key)
        }
    }

    /// ``split(generation:certificateChainPEM:privateKeyDER:)`` for a key held in an array (tests).
    public static func split(generation: UInt32, certificateChainPEM: [UInt8], privateKeyDER: [UInt8]) throws(IPCError) -> [TLSChunk] {
        var failure: IPCError?
        let chunks = privateKeyDER.withUnsafeBytes { key -> [TLSChunk] in
            do throws(IPCError) { return try split(generation: generation, certificateChainPEM: certificateChainPEM, key: key) } catch {
                failure = error
                return []
            }
        }
        if let failure { throw failure }
        return chunks
    }

    private static func split(generation: UInt32, certificateChainPEM: [UInt8], key: UnsafeRawBufferPointer) throws(IPCError) -> [TLSChunk] {
        guard !certificateChainPEM.isEmpty, !key.isEmpty else {
            throw IPCError(.invalidArgument, "TLS material needs both a certificate chain and a private key")
        }
        let chainChunks = (certificateChainPEM.count + maxDataLength - 1) / maxDataLength
        let keyChunks = (key.count + maxDataLength - 1) / maxDataLength
        let total = chainChunks + keyChunks
        guard total <= Int(maxCount) else {
            throw IPCError(.oversize, "TLS material of \(certificateChainPEM.count + key.count) bytes needs \(total) chunks, more than \(maxCount); use a shorter certificate chain")
        }
        var chunks: [TLSChunk] = []
        chunks.reserveCapacity(total)
        for index in 0..<chainChunks {
            let range = (index * maxDataLength)..<min(certificateChainPEM.count, (index + 1) * maxDataLength)
            chunks.append(TLSChunk(generation: generation, kind: .certificateChainPEM, index: UInt16(index), count: UInt16(total),
                                   data: Array(certificateChainPEM[range])))
        }
        for index in 0..<keyChunks {
            let range = (index * maxDataLength)..<min(key.count, (index + 1) * maxDataLength)
            // Exactly sized, so the array never reallocates (and leaves no unwiped copy behind).
            let data = [UInt8](unsafeUninitializedCapacity: range.count) { buffer, initialized in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: key[range]))
                initialized = range.count
            }
            chunks.append(TLSChunk(generation: generation, kind: .privateKeyDER, index: UInt16(chainChunks + index), count: UInt16(total), data: data))
        }
        return chunks
    }
}

/// The broker's side of ``TLSChunk``: puts one generation back together and checks that it
/// arrives whole and in order (any gap, reordering or mix of generations is a violation; a chunk
/// 0 drops an unfinished generation, since a sender that timed out half-way starts again).
///
/// The key is put together once, in ``SecretBytes`` (locked, never in a core dump, wiped when
/// dropped), and the data of every chunk it is given is wiped, so the key leaves no copy in
/// freed memory (issue 16 item 4). `~Copyable` because it holds the key.
public struct TLSChunkAssembler: ~Copyable, Sendable {
    /// One whole generation, as the supervisor sent it.
    /// - Parameters:
    ///   - generation: the number the supervisor gave this load (echoed in its `tlsAck`).
    ///   - certificateChainPEM: the chain, leaf first, as PEM.
    ///   - privateKeyDER: the unencrypted key as DER, wiped when this value is dropped.
    public struct Material: ~Copyable, Sendable {
        public let generation: UInt32
        public let certificateChainPEM: [UInt8]
        public let privateKeyDER: SecretBytes
    }

    private var generation: UInt32?
    private var expected: UInt16 = 0
    private var count: UInt16 = 0
    private var kind: TLSChunk.Kind = .certificateChainPEM
    private var chain: [UInt8] = []
    private var key: SecretBytes?

    public init() {}

    /// Whether a generation has started and not finished yet.
    public var isIncomplete: Bool { generation != nil }

    /// Adds the next chunk; returns the material when it was the last chunk of its generation.
    /// The chunk's data is wiped here (pass the decoded chunk itself, not a copy that is kept).
    public mutating func add(_ chunk: consuming TLSChunk) throws(IPCError) -> Material? {
        defer { TLSChunk.wipe(&chunk.data) }
        if chunk.index == 0 {
            // A new generation replaces an unfinished one (the sender gave up half-way).
            reset()
            guard chunk.kind == .certificateChainPEM else { throw violation("a generation must start with the certificate chain") }
            generation = chunk.generation
            count = chunk.count
            expected = 0
            kind = .certificateChainPEM
        }
        guard let current = generation, chunk.generation == current, chunk.index == expected, chunk.count == count else {
            throw violation("chunk \(chunk.index) of \(chunk.count) (generation \(chunk.generation)) is out of order")
        }
        guard !chunk.data.isEmpty, chunk.kind.rawValue >= kind.rawValue else {
            throw violation("chunk \(chunk.index) is empty or goes back from the private key to the chain")
        }
        kind = chunk.kind
        switch chunk.kind {
        case .certificateChainPEM:
            chain += chunk.data
        case .privateKeyDER:
            var buffer: SecretBytes
            if let started = key.take() {
                buffer = started
            } else {
                // Room for this and every later chunk at this size: usually no growth at all.
                buffer = try SecretBytes(capacity: chunk.data.count * Int(count - chunk.index))
            }
            try buffer.append(contentsOf: chunk.data[...])
            key = consume buffer
        }
        expected += 1
        guard expected == count else { return nil }
        defer { reset() }
        guard !chain.isEmpty, let whole = key.take() else { throw violation("generation \(current) lacks the chain or the key") }
        return Material(generation: current, certificateChainPEM: chain, privateKeyDER: whole)
    }

    private mutating func reset() {
        generation = nil
        chain = []
        key = nil  // SecretBytes wipes and unmaps itself
    }

    private mutating func violation(_ what: String) -> IPCError {
        reset()
        return IPCError(.malformedPayload, "tlsChunk: \(what); the supervisor is broken, close the channel")
    }
}

extension TLSChunk {
    /// Overwrites secret bytes with zeros (explicit_bzero, which the optimiser keeps) before they
    /// are released: key material, passphrases. See ``SecretBytes/wipe(_:)``.
    public static func wipe(_ bytes: inout [UInt8]) {
        SecretBytes.wipe(&bytes)
    }
}
