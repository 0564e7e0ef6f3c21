import ISCSIWire
import NIOCore
import Testing

@Suite("CRC32C (RFC 3720 Appendix B.4 vectors)")
struct CRC32CTests {
    @Test func zeros() { #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA) }
    @Test func ones() { #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43) }
    @Test func incrementing() { #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E) }
    @Test func decrementing() { #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C) }
    @Test func checkString() { #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283) }
    @Test func paddingCountsAsZeros() {
        let data: [UInt8] = [1, 2, 3, 4, 5]
        var b = ByteBuffer()
        b.writeBytes(data)
        #expect(CRC32C.checksum(b, padding: 3) == CRC32C.checksum(data + [0, 0, 0]))
    }
    @Test("The CPU instruction and the table agree for every length 0-300 and every start alignment")
    func instructionMatchesTable() {
        var state: UInt64 = 0x1234_5678_9ABC_DEF1
        let bytes: [UInt8] = (0..<320).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
        bytes.withUnsafeBytes { all in
            for start in 0..<8 {
                for length in 0...300 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    #expect(CRC32C.update(CRC32C.initial, slice) == CRC32C.updatePortable(CRC32C.initial, slice),
                            "start \(start) length \(length)")
                }
            }
        }
        #if arch(x86_64)
        #expect(CRC32C.usesCPUInstruction, "an x86-64 CPU without SSE4.2")
        #endif
    }
}

/// Builds an initiator PDU as wire bytes.
func initiatorPDU(opcode: UInt8, flags: UInt8 = 0x80, itt: UInt32 = 1, data: [UInt8] = [], digests: DigestSettings = .none,
                  corruptDataDigest: Bool = false) -> ByteBuffer
{
    var h = [UInt8](repeating: 0, count: 48)
    h[0] = opcode
    h[1] = flags
    h[5] = UInt8(data.count >> 16); h[6] = UInt8((data.count >> 8) & 0xFF); h[7] = UInt8(data.count & 0xFF)
    h[16] = UInt8(itt >> 24); h[17] = UInt8((itt >> 16) & 0xFF); h[18] = UInt8((itt >> 8) & 0xFF); h[19] = UInt8(itt & 0xFF)
    var out = ByteBuffer()
    out.writeBytes(h)
    if digests.header { out.writeInteger(CRC32C.checksum(h), endianness: .little) }
    out.writeBytes(data)
    let pad = (4 - data.count % 4) % 4
    out.writeRepeatingByte(0, count: pad)
    if digests.data && !data.isEmpty {
        let crc = CRC32C.checksum(data + [UInt8](repeating: 0, count: pad))
        out.writeInteger(corruptDataDigest ? crc ^ 1 : crc, endianness: .little)
    }
    return out
}

@Suite("PDU framing")
struct FramingTests {
    @Test func dripFeedOneByteAtATime() throws {
        let wire = initiatorPDU(opcode: 0x00, data: Array("nopping\0".utf8) + [1, 2, 3])
        let framer = PDUFramer(maxDataSegmentLength: 8192)
        var acc = ByteBuffer()
        var got: [RawPDU] = []
        for byte in wire.readableBytesView {
            acc.writeInteger(byte)
            if let pdu = try framer.next(from: &acc) { got.append(pdu) }
        }
        #expect(got.count == 1)
        #expect(got[0].data.readableBytes == 11)
        #expect(acc.readableBytes == 0)  // padding consumed
    }

    @Test func twoPDUsInOneRead() throws {
        var acc = initiatorPDU(opcode: 0x00, itt: 1)
        var second = initiatorPDU(opcode: 0x00, itt: 2, data: [9])
        acc.writeBuffer(&second)
        let framer = PDUFramer()
        let a = try framer.next(from: &acc)
        let b = try framer.next(from: &acc)
        #expect(a?.header.initiatorTaskTag == 1)
        #expect(b?.header.initiatorTaskTag == 2)
        #expect(try framer.next(from: &acc) == nil)
    }

    @Test func digestsVerified() throws {
        let digests = DigestSettings(header: true, data: true)
        var good = initiatorPDU(opcode: 0x00, data: [1, 2, 3, 4, 5], digests: digests)
        let framer = PDUFramer(digests: digests)
        #expect(try framer.next(from: &good)?.data.readableBytes == 5)

        var bad = initiatorPDU(opcode: 0x00, data: [1, 2, 3, 4, 5], digests: digests, corruptDataDigest: true)
        #expect(throws: FramingError.self) { try framer.next(from: &bad) }
        #expect(bad.readableBytes == 0)  // the whole PDU was consumed

        var badHeader = initiatorPDU(opcode: 0x00, digests: digests)
        badHeader.setInteger(UInt8(0x55), at: 20)
        #expect(throws: FramingError.headerDigestMismatch) { try framer.next(from: &badHeader) }
    }

    @Test func oversizeSegmentRefusedBeforePayloadArrives() throws {
        var header = initiatorPDU(opcode: 0x05, data: [UInt8](repeating: 0, count: 9000))
        header.moveWriterIndex(to: 48)  // only the header has arrived
        let framer = PDUFramer(maxDataSegmentLength: 8192)
        #expect(throws: FramingError.self) { try framer.next(from: &header) }
    }
}

@Suite("Text keys")
struct TextKeyTests {
    @Test func roundTrip() throws {
        let pairs = [TextKeyValue("HeaderDigest", "CRC32C,None"), TextKeyValue("MaxRecvDataSegmentLength", "262144")]
        let encoded = TextKeys.encode(pairs)
        #expect(Array(encoded.readableBytesView) == Array("HeaderDigest=CRC32C,None\0MaxRecvDataSegmentLength=262144\0".utf8))
        #expect(try TextKeys.parse(Array(encoded.readableBytesView)) == pairs)
    }
    @Test func missingSeparatorIsAnError() {
        #expect(throws: TextFormatError.missingSeparator("Bogus")) { try TextKeys.parse(Array("Bogus\0".utf8)) }
    }
    @Test func emptyValueAllowed() throws {
        #expect(try TextKeys.parse(Array("SendTargets=\0".utf8)) == [TextKeyValue("SendTargets", "")])
    }
}

@Suite("Target PDU encoding, byte for byte")
struct EncodingTests {
    @Test func scsiResponseWithSense() {
        var r = SCSIResponsePDU(initiatorTaskTag: 0x0100_0000, status: 0x02, residual: .underflow(512), sense: [0x70, 0, 5])
        r.statSN = 7; r.expCmdSN = 8; r.maxCmdSN = 135
        let bytes = Array(PDUWriter().bytes(.scsiResponse(r)).readableBytesView)
        var expected = [UInt8](repeating: 0, count: 48)
        expected[0] = 0x21; expected[1] = 0x82; expected[3] = 0x02
        expected[7] = 5  // SenseLength(2) + 3 bytes
        expected[16] = 0x01
        expected[27] = 7; expected[31] = 8; expected[35] = 135
        expected[46] = 0x02  // residual 512
        expected += [0, 3, 0x70, 0, 5, 0, 0, 0]  // sense length, sense, 3 pad bytes
        #expect(bytes == expected)
    }

    @Test func dataInWithPhaseCollapsedStatus() {
        var d = DataIn(lun: 0, initiatorTaskTag: 9, dataSN: 2, bufferOffset: 8192, data: ByteBuffer(bytes: [1, 2, 3, 4]),
                       isFinal: true, status: 0, residual: .overflow(4))
        d.statSN = 3
        let (h, _) = TargetPDU.dataIn(d).encoded()
        #expect(h.byte(1) == 0x85)  // F | O | S
        #expect(h.u32(20) == 0xFFFF_FFFF)
        #expect(h.u32(24) == 3)
        #expect(h.u32(36) == 2)
        #expect(h.u32(40) == 8192)
        #expect(h.u32(44) == 4)
        #expect(h.dataSegmentLength == 4)
    }

    @Test func rejectCarriesTheRejectedHeader() {
        let rejected = [UInt8](repeating: 0xAB, count: 48)
        let (h, data) = TargetPDU.reject(Reject(reason: .protocolError, rejectedHeader: rejected)).encoded()
        #expect(h.byte(0) == 0x3F)
        #expect(h.byte(2) == 0x04)
        #expect(h.u32(16) == 0xFFFF_FFFF)
        #expect(Array(data.readableBytesView) == rejected)
    }

    @Test func headerDigestAppended() {
        let writer = PDUWriter(digests: DigestSettings(header: true, data: false))
        let out = writer.bytes(.nopIn(NOPIn(initiatorTaskTag: 1, targetTransferTag: 0xFFFF_FFFF)))
        #expect(out.readableBytes == 52)
        let header = Array(out.readableBytesView.prefix(48))
        #expect(out.getInteger(at: 48, endianness: .little, as: UInt32.self) == CRC32C.checksum(header))
    }
}
