import IPC
import Testing

@Suite("Frame header and record validation")
struct FrameCodecTests {
    @Test("header encodes big-endian in the documented layout")
    func headerGolden() throws {
        let header = FrameHeader(type: .connection, payloadLength: 0x0102, requestID: 0xA0B0_C0D0, hasFD: true)
        #expect(header.encode() == [1, 1, 0, 3, 0, 0, 1, 2, 0xA0, 0xB0, 0xC0, 0xD0, 0, 0, 0, 0])
        #expect(try FrameHeader(decoding: header.encode()) == header)
    }

    @Test("a record of every type round-trips with its payload and fd flag")
    func recordRoundTrip() throws {
        for type in FrameType.allCases {
            let payload = [UInt8](repeating: 0x5a, count: min(type.maxPayload, 3))
            let record = try FrameCodec.encode(type: type, requestID: 42, payload: payload, hasFD: type.carriesFD)
            #expect(record.count == FrameHeader.size + payload.count)
            let decoded = try FrameCodec.decode(record: record, fdAttached: type.carriesFD)
            #expect(decoded.header.type == type)
            #expect(decoded.header.requestID == 42)
            #expect(decoded.header.hasFD == type.carriesFD)
            #expect(decoded.payload == payload)
        }
    }

    @Test("a record cut at every length is refused")
    func recordTruncation() throws {
        let record = try FrameCodec.encode(type: .hello, payload: sampleSettings.encode(), hasFD: false)
        for length in 0..<record.count {
            #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: Array(record[0..<length]), fdAttached: false) } == .truncated)
        }
    }

    @Test("bytes after the declared payload are refused")
    func recordTrailing() throws {
        let record = try FrameCodec.encode(type: .drain, payload: DrainRequest(deadlineMs: 9).encode(), hasFD: false)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: record + [0], fdAttached: false) } == .malformedPayload)
    }

    @Test("a declared length over the type's cap is refused before reading the payload")
    func headerOverCap() {
        for type in FrameType.allCases {
            let header = rawHeader(flags: type.carriesFD ? 1 : 0, type: type.rawValue, length: UInt32(type.maxPayload + 1))
            #expect(errorCode { () throws(IPCError) in try FrameHeader(decoding: header) } == .oversize)
            #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: header, fdAttached: type.carriesFD) } == .oversize)
        }
        let huge = rawHeader(type: FrameType.hello.rawValue, length: .max)
        #expect(errorCode { () throws(IPCError) in try FrameHeader(decoding: huge) } == .oversize)
    }

    @Test("a record over 64 KiB is refused")
    func recordOverMax() {
        let record = rawHeader(type: FrameType.hello.rawValue, length: 0) + [UInt8](repeating: 0, count: FrameType.maxPayloadCap + 1)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: record, fdAttached: false) } == .oversize)
    }

    @Test("the sender refuses a payload over the type's cap")
    func encodeOverCap() {
        #expect(errorCode { () throws(IPCError) in
            try FrameCodec.encode(type: .drain, payload: [UInt8](repeating: 0, count: 17), hasFD: false)
        } == .oversize)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.encode(type: .ready, payload: [0], hasFD: false) } == .oversize)
    }

    @Test("unknown frame types are refused", arguments: [UInt16(0), 10, 15, 21, 31, 34, 39, 48, 0xFFFF])
    func unknownType(raw: UInt16) {
        let header = rawHeader(type: raw, length: 0)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: header, fdAttached: false) } == .unknownType)
    }

    @Test("a version other than 1 is refused", arguments: [UInt8(0), 2, 0xFF])
    func badVersion(version: UInt8) {
        let header = rawHeader(version: version, type: FrameType.ready.rawValue, length: 0)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: header, fdAttached: false) } == .badVersion)
    }

    @Test("flag bits other than HAS_FD are refused", arguments: [UInt8(0x02), 0x03, 0x80, 0xFF])
    func badFlags(flags: UInt8) {
        let header = rawHeader(flags: flags, type: FrameType.ready.rawValue, length: 0)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: header, fdAttached: false) } == .badFlags)
    }

    @Test("a non-zero reserved word is refused", arguments: [UInt32(1), 0x8000_0000, .max])
    func badReserved(reserved: UInt32) {
        let header = rawHeader(type: FrameType.ready.rawValue, length: 0, reserved: reserved)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: header, fdAttached: false) } == .badReserved)
    }

    @Test("HAS_FD, the attached fd and the table must agree")
    func fdMismatch() {
        let connection = FrameType.connection.rawValue
        let ready = FrameType.ready.rawValue
        let cases: [(flags: UInt8, type: UInt16, attached: Bool)] = [
            (0, connection, false),  // connection without fd or flag
            (1, connection, false),  // flag says fd, none arrived
            (0, connection, true),  // fd arrived, flag not set
            (0, ready, true),  // stray fd on a type that carries none
            (1, ready, true),  // flag and fd on a type that carries none
            (1, ready, false),  // flag without fd on a type that carries none
        ]
        for c in cases {
            let header = rawHeader(flags: c.flags, type: c.type, length: 0)
            #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: header, fdAttached: c.attached) } == .fdMismatch)
        }
        #expect(errorCode { () throws(IPCError) in try FrameCodec.encode(type: .connection, payload: [], hasFD: false) } == .fdMismatch)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.encode(type: .credit, payload: [], hasFD: true) } == .fdMismatch)
    }

    @Test("frames travelling the wrong way are refused on both ends")
    func direction() throws {
        let supervisorEnd = ChannelRoles(local: .supervisor, remote: .broker)
        let brokerEnd = ChannelRoles(local: .broker, remote: .supervisor)
        let hello = try FrameCodec.encode(type: .hello, payload: sampleSettings.encode(), hasFD: false, roles: supervisorEnd)
        #expect(try FrameCodec.decode(record: hello, fdAttached: false, roles: brokerEnd).header.type == .hello)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: hello, fdAttached: false, roles: supervisorEnd) } == .wrongDirection)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.encode(type: .hello, payload: [], hasFD: false, roles: brokerEnd) } == .wrongDirection)
        // An auth verdict is for the broker, but not on its supervisor channel.
        let verdict = try FrameCodec.encode(type: .authVerdict, payload: [], hasFD: false)
        #expect(errorCode { () throws(IPCError) in try FrameCodec.decode(record: verdict, fdAttached: false, roles: brokerEnd) } == .wrongDirection)
        #expect(try FrameCodec.decode(record: verdict, fdAttached: false, roles: ChannelRoles(local: .broker, remote: .auth)).header.type == .authVerdict)
    }

    @Test("mutating any byte of a valid record never crashes the decoder")
    func mutations() throws {
        let records = [
            try FrameCodec.encode(type: .hello, payload: sampleSettings.encode(), hasFD: false),
            try FrameCodec.encode(type: .connection, payload: sampleHandoff.encode(), hasFD: true),
        ]
        var decodedCount = 0
        var refusedCount = 0
        for record in records {
            for index in record.indices {
                for value: UInt8 in [0, 1, 2, 0x7F, 0x80, 0xFF] where value != record[index] {
                    var mutated = record
                    mutated[index] = value
                    for attached in [false, true] {
                        do {
                            let (header, payload) = try FrameCodec.decode(record: mutated, fdAttached: attached)
                            switch header.type {
                            case .hello: _ = try BrokerSettings(decoding: payload)
                            case .connection: _ = try ConnectionHandoff(decoding: payload)
                            default: break
                            }
                            decodedCount += 1
                        } catch {
                            refusedCount += 1
                        }
                    }
                }
            }
        }
        #expect(decodedCount > 0)
        #expect(refusedCount > 0)
    }
}
