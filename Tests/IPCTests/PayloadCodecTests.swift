import Glibc
import IPC
import Testing

@Suite("Payload codec and typed messages")
struct PayloadCodecTests {
    @Test("integers, bools, strings, bytes, lists and addresses round-trip big-endian")
    func primitives() throws {
        var w = PayloadWriter()
        w.writeUInt8(0xAB)
        w.writeUInt16(0x0102)
        w.writeUInt32(0x0304_0506)
        w.writeUInt64(0x0708_090A_0B0C_0D0E)
        w.writeBool(true)
        w.writeBool(false)
        w.writeString("é")
        w.writeBytes([9, 8])
        w.writeStringList(["a", ""])
        w.writePeerAddress(sampleV4)
        w.writePeerAddress(.none)
        #expect(w.bytes == [
            0xAB, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xA, 0xB, 0xC, 0xD, 0xE, 1, 0,
            0, 0, 0, 2, 0xC3, 0xA9,
            0, 0, 0, 2, 9, 8,
            0, 0, 0, 2, 0, 0, 0, 1, 0x61, 0, 0, 0, 0,
            4, 127, 0, 0, 1, 0x13, 0x88,
            0, 0, 0,
        ])
        var r = PayloadReader(w.bytes)
        #expect(try r.readUInt8() == 0xAB)
        #expect(try r.readUInt16() == 0x0102)
        #expect(try r.readUInt32() == 0x0304_0506)
        #expect(try r.readUInt64() == 0x0708_090A_0B0C_0D0E)
        #expect(try r.readBool() == true)
        #expect(try r.readBool() == false)
        #expect(try r.readString(maxLength: 2) == "é")
        #expect(try r.readBytes(maxLength: 2) == [9, 8])
        #expect(try r.readStringList(maxCount: 2, maxLength: 1) == ["a", ""])
        #expect(try r.readPeerAddress() == sampleV4)
        #expect(try r.readPeerAddress() == .none)
        try r.finish()
    }

    @Test("every typed message round-trips")
    func messagesRoundTrip() throws {
        #expect(try BrokerSettings(decoding: sampleSettings.encode()) == sampleSettings)
        var echoAny = sampleSettings
        echoAny.corsOrigins = []
        echoAny.key = ""
        #expect(try BrokerSettings(decoding: echoAny.encode()) == echoAny)
        for peer in [sampleV4, sampleV6, PeerAddress.none] {
            let handoff = ConnectionHandoff(peer: peer, tls: true)
            #expect(try ConnectionHandoff(decoding: handoff.encode()) == handoff)
        }
        let drain = DrainRequest(deadlineMs: 0x0102_0304)
        #expect(drain.encode() == [1, 2, 3, 4])
        #expect(try DrainRequest(decoding: drain.encode()) == drain)
        #expect(BrokerReady().encode().isEmpty)
        #expect(try BrokerReady(decoding: []) == BrokerReady())
        #expect(try AuthHelperSettings(decoding: sampleAuthSettings.encode()) == sampleAuthSettings)
        let bare = AuthHelperSettings(process: ChildSettings(logLevel: "info", user: "nobody"), programUser: "p", timeoutMs: 0)
        #expect(try AuthHelperSettings(decoding: bare.encode()) == bare)
    }

    @Test("a child's settings are capped like every other field: an over-long user or path is refused before sending")
    func childSettingsCaps() {
        var longUser = sampleAuthSettings
        longUser.process.user = String(repeating: "u", count: ChildSettings.maxUserLength + 1)
        #expect(errorCode { () throws(IPCError) in try longUser.encodeChecked() } == .oversize)
        var longPath = sampleAuthSettings
        longPath.usersPath = String(repeating: "/", count: AuthHelperSettings.maxPathLength + 1)
        #expect(errorCode { () throws(IPCError) in try AuthHelperSettings(decoding: longPath.encode()) } == .oversize)
        var longChroot = sampleSettings
        longChroot.process.chrootDirectory = String(repeating: "c", count: ChildSettings.maxPathLength + 1)
        #expect(errorCode { () throws(IPCError) in try longChroot.encodeChecked() } == .oversize)
    }

    @Test("a payload cut at every length is refused as truncated")
    func truncation() throws {
        let payloads: [(String, [UInt8], ([UInt8]) throws(IPCError) -> Void)] = [
            ("settings", sampleSettings.encode(), { (p) throws(IPCError) in _ = try BrokerSettings(decoding: p) }),
            ("handoff v4", sampleHandoff.encode(), { (p) throws(IPCError) in _ = try ConnectionHandoff(decoding: p) }),
            ("handoff v6", ConnectionHandoff(peer: sampleV6, tls: true).encode(),
             { (p) throws(IPCError) in _ = try ConnectionHandoff(decoding: p) }),
            ("drain", DrainRequest(deadlineMs: 5).encode(), { (p) throws(IPCError) in _ = try DrainRequest(decoding: p) }),
        ]
        for (name, payload, decode) in payloads {
            try decode(payload)
            for length in 0..<payload.count {
                let code = errorCode { () throws(IPCError) in try decode(Array(payload[0..<length])) }
                #expect(code == .truncated, "\(name) cut at \(length)")
            }
        }
    }

    @Test("trailing bytes after the last field are refused")
    func trailingBytes() {
        #expect(errorCode { () throws(IPCError) in try BrokerSettings(decoding: sampleSettings.encode() + [0]) } == .malformedPayload)
        #expect(errorCode { () throws(IPCError) in try ConnectionHandoff(decoding: sampleHandoff.encode() + [1]) } == .malformedPayload)
        #expect(errorCode { () throws(IPCError) in try DrainRequest(decoding: [0, 0, 0, 1, 0]) } == .malformedPayload)
        #expect(errorCode { () throws(IPCError) in try BrokerReady(decoding: [0]) } == .malformedPayload)
    }

    @Test("strings must be valid UTF-8", arguments: [[UInt8(0xFF)], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0x61, 0xE2, 0x82]])
    func invalidUTF8(bytes: [UInt8]) {
        var w = PayloadWriter()
        w.writePeerAddress(sampleV4)
        w.writeBytes(bytes)
        w.writeBool(false)
        w.writeUInt64(0)
        #expect(errorCode { () throws(IPCError) in try ConnectionHandoff(decoding: w.bytes) } == .malformedPayload)
    }

    @Test("bools must be 0 or 1", arguments: [UInt8(2), 0x7F, 0xFF])
    func badBool(value: UInt8) {
        var payload = sampleHandoff.encode()
        payload[payload.count - 9] = value  // `tls`, before the u64 `acceptedAtNs`
        #expect(errorCode { () throws(IPCError) in try ConnectionHandoff(decoding: payload) } == .malformedPayload)
    }

    @Test("fields over their caps are refused on decode and before sending")
    func fieldCaps() {
        var longKey = sampleSettings
        longKey.key = String(repeating: "k", count: BrokerSettings.maxKeyLength + 1)
        #expect(errorCode { () throws(IPCError) in try BrokerSettings(decoding: longKey.encode()) } == .oversize)
        #expect(errorCode { () throws(IPCError) in try longKey.encodeChecked() } == .oversize)

        var multiByteKey = sampleSettings  // 129 two-byte characters = 258 bytes: the cap counts bytes
        multiByteKey.key = String(repeating: "é", count: 129)
        #expect(errorCode { () throws(IPCError) in try multiByteKey.encodeChecked() } == .oversize)

        var manyOrigins = sampleSettings
        manyOrigins.corsOrigins = Array(repeating: "https://a", count: BrokerSettings.maxCorsOrigins + 1)
        #expect(errorCode { () throws(IPCError) in try manyOrigins.encodeChecked() } == .oversize)

        var longOrigin = sampleSettings
        longOrigin.corsOrigins = [String(repeating: "o", count: BrokerSettings.maxCorsOriginLength + 1)]
        #expect(errorCode { () throws(IPCError) in try longOrigin.encodeChecked() } == .oversize)

        // A declared length of 4 GiB is refused by its cap, not by trying to allocate it.
        var r = PayloadReader([0xFF, 0xFF, 0xFF, 0xFF])
        #expect(errorCode { () throws(IPCError) in try r.readBytes(maxLength: 1024) } == .oversize)
        var list = PayloadReader([0xFF, 0xFF, 0xFF, 0xFF])
        #expect(errorCode { () throws(IPCError) in try list.readStringList(maxCount: 64, maxLength: 8) } == .oversize)
        var shortList = PayloadReader([0, 0, 0, 64])
        #expect(errorCode { () throws(IPCError) in try shortList.readStringList(maxCount: 64, maxLength: 8) } == .truncated)
    }

    @Test("addresses: unknown family, bad length and a port on 'none' are refused")
    func badAddresses() {
        var unknown = PayloadReader([5, 1, 2, 3, 4, 0, 80])
        #expect(errorCode { () throws(IPCError) in try unknown.readPeerAddress() } == .malformedPayload)
        var nonePort = PayloadReader([0, 0, 80])
        #expect(errorCode { () throws(IPCError) in try nonePort.readPeerAddress() } == .malformedPayload)
        #expect(errorCode { () throws(IPCError) in try PeerAddress(family: .ipv4, bytes: [1, 2, 3], port: 1) } == .malformedPayload)
        #expect(errorCode { () throws(IPCError) in try PeerAddress(family: .ipv6, bytes: [1, 2, 3, 4], port: 1) } == .malformedPayload)
    }

    @Test("addresses convert from sockaddr_storage and print as host:port")
    func sockaddrConversion() {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { raw in
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = UInt16(5000).bigEndian
            sin.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            raw.storeBytes(of: sin, as: sockaddr_in.self)
        }
        let v4 = PeerAddress(storage)
        #expect(v4 == sampleV4)
        #expect(v4.description == "127.0.0.1:5000")

        func v6(_ bytes: [UInt8], port: UInt16) -> PeerAddress {
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { raw in
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                sin6.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
                raw.storeBytes(of: sin6, as: sockaddr_in6.self)
            }
            return PeerAddress(storage)
        }
        let loopback6 = v6([UInt8](repeating: 0, count: 15) + [1], port: 5000)
        #expect(loopback6 == sampleV6)
        #expect(loopback6.description == "[::1]:5000")
        let doc = v6([0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [0x42], port: 443)
        #expect(doc.description == "[2001:db8::42]:443")
        let mapped = v6([UInt8](repeating: 0, count: 10) + [0xFF, 0xFF, 192, 0, 2, 7], port: 80)
        #expect(mapped.family == .ipv4)
        #expect(mapped.description == "192.0.2.7:80")

        var unix = sockaddr_storage()
        unix.ss_family = sa_family_t(AF_UNIX)
        #expect(PeerAddress(unix) == .none)
        #expect(PeerAddress.none.description == "none")
    }
}
