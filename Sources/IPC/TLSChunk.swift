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
    /// key. Throws ``IPCError/Code/oversize`` when it needs more than ``maxCount`` chunks.
    public static func split(generation: UInt32, certificateChainPEM: [UInt8], privateKeyDER: [UInt8]) throws(IPCError) -> [TLSChunk] {
        guard !certificateChainPEM.isEmpty, !privateKeyDER.isEmpty else {
            throw IPCError(.invalidArgument, "TLS material needs both a certificate chain and a private key")
        }
        let pieces: [(Kind, [UInt8])] = [(.certificateChainPEM, certificateChainPEM), (.privateKeyDER, privateKeyDER)]
        var parts: [(Kind, ArraySlice<UInt8>)] = []
        for (kind, bytes) in pieces {
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + maxDataLength)
                parts.append((kind, bytes[start..<end]))
                start = end
            }
        }
        guard parts.count <= Int(maxCount) else {
            throw IPCError(.oversize, "TLS material of \(certificateChainPEM.count + privateKeyDER.count) bytes needs \(parts.count) chunks, more than \(maxCount); use a shorter certificate chain")
        }
        return parts.enumerated().map { index, part in
            TLSChunk(generation: generation, kind: part.0, index: UInt16(index), count: UInt16(parts.count), data: Array(part.1))
        }
    }
}

/// The broker's side of ``TLSChunk``: puts one generation back together and checks that it
/// arrives whole and in order (any gap, reordering or mix of generations is a violation; a chunk
/// 0 drops an unfinished generation, since a sender that timed out half-way starts again).
public struct TLSChunkAssembler: Sendable {
    private var generation: UInt32?
    private var expected: UInt16 = 0
    private var count: UInt16 = 0
    private var kind: TLSChunk.Kind = .certificateChainPEM
    private var chain: [UInt8] = []
    private var key: [UInt8] = []

    public init() {}

    /// Whether a generation has started and not finished yet.
    public var isIncomplete: Bool { generation != nil }

    /// Adds the next chunk; returns the material when it was the last chunk of its generation.
    /// The caller owns the returned key bytes and should wipe them once it has used them.
    public mutating func add(_ chunk: TLSChunk) throws(IPCError) -> (certificateChainPEM: [UInt8], privateKeyDER: [UInt8])? {
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
        case .certificateChainPEM: chain += chunk.data
        case .privateKeyDER: key += chunk.data
        }
        expected += 1
        guard expected == count else { return nil }
        defer { reset() }
        guard !chain.isEmpty, !key.isEmpty else { throw violation("generation \(current) lacks the chain or the key") }
        return (chain, key)
    }

    private mutating func reset() {
        generation = nil
        TLSChunk.wipe(&key)
        chain = []
        key = []
    }

    private mutating func violation(_ what: String) -> IPCError {
        reset()
        return IPCError(.malformedPayload, "tlsChunk: \(what); the supervisor is broken, close the channel")
    }
}

extension TLSChunk {
    /// Overwrites secret bytes with zeros (explicit_bzero, which the optimiser keeps) before they
    /// are released: key material, passphrases.
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            explicit_bzero(base, buffer.count)
        }
    }
}
