// Hostile input: a catalogue of malformed PDUs, each with the answer RFC 7143 prescribes
// (Reject with its reason, silent drop, CHECK CONDITION with the transport sense, or closing
// the connection), and a seeded random-PDU run through framing, decoding and the session
// machine. Cases already covered elsewhere (unknown opcode, wrong DataSN, oversize segment
// before its payload, digests in the framer) are not repeated here.
@testable import ISCSIEngine
@testable import ISCSIWire
import NIOCore
import Testing

private func rejects(_ actions: [SessionAction]) -> [RejectReason] {
    sent(actions).compactMap { if case .reject(let r) = $0 { return r.reason } else { return nil } }
}

private func senseOf(_ actions: [SessionAction]) -> [UInt8]? {
    for pdu in sent(actions) { if case .scsiResponse(let r) = pdu { return r.sense } }
    return nil
}

/// ASC/ASCQ of fixed-format sense (bytes 12, 13).
private func ascq(_ sense: [UInt8]?) -> [UInt8]? {
    guard let sense, sense.count >= 14 else { return nil }
    return [sense[2] & 0x0F, sense[12], sense[13]]
}

private func dataOut(itt: UInt32, ttt: UInt32 = 0xFFFF_FFFF, dataSN: UInt32 = 0, offset: UInt32 = 0, count: Int,
                     final: Bool = true) -> InitiatorPDU {
    .dataOut(DataOut(isFinal: final, lun: 0, initiatorTaskTag: itt, targetTransferTag: ttt, expStatSN: 0, dataSN: dataSN,
                     bufferOffset: offset, data: ByteBuffer(repeating: 0xAB, count: count)))
}

@Suite("Malformed PDUs: the answer for each (RFC 7143 §6.7, §7, §11.17)")
struct MalformedPDUCatalogueTests {
    @Test func truncatedHeaderYieldsNothingAndConsumesNothing() throws {
        let framer = PDUFramer()
        var buffer = ByteBuffer(bytes: [UInt8](repeating: 0x01, count: 47))
        #expect(try framer.next(from: &buffer) == nil)
        #expect(buffer.readableBytes == 47)
    }

    @Test func dataSegmentLengthThatLiesWaitsForTheBytes() throws {
        // DataSegmentLength says 4096, only 100 bytes follow: no PDU is cut (the connection's
        // login timer or NOP timeout ends a peer that never sends the rest).
        var header = [UInt8](repeating: 0, count: 48)
        header[0] = 0x01
        header[5] = 0x00; header[6] = 0x10; header[7] = 0x00
        var buffer = ByteBuffer(bytes: header + [UInt8](repeating: 7, count: 100))
        #expect(try PDUFramer().next(from: &buffer) == nil)
    }

    @Test func loginRequestInFullFeaturePhaseIsAProtocolError() {
        var s = makeSession(FakePort())
        let login = LoginRequest(transit: true, continue: false, currentStage: 1, nextStage: 3, versionMax: 0, versionMin: 0,
                                 isid: 1, tsih: 0, initiatorTaskTag: 9, cid: 0, cmdSN: 10, expStatSN: 0, text: ByteBuffer())
        #expect(rejects(s.receive(.login(login), header: anyHeader, now: t0)) == [.protocolError])
    }

    @Test func snackIsNotSupportedAtErrorRecoveryLevel0() {
        var s = makeSession(FakePort())
        let snack = BasicHeaderSegment(opcode: 0x10)
        guard let pdu = try? InitiatorPDU(decoding: RawPDU(header: snack, additionalHeader: ByteBuffer(), data: ByteBuffer())) else {
            Issue.record("SNACK did not decode"); return
        }
        #expect(rejects(s.receive(pdu, header: snack, now: t0)) == [.commandNotSupported])
    }

    @Test func dataOutForAnUnknownTaskWithATransferTagIsRejected() {
        var s = makeSession(FakePort())
        #expect(rejects(s.receive(dataOut(itt: 77, ttt: 5, count: 512), header: anyHeader, now: t0)) == [.invalidPDUField])
        // Unsolicited (TTT 0xFFFFFFFF) data for an unknown task is dropped without an answer.
        #expect(s.receive(dataOut(itt: 78, count: 512), header: anyHeader, now: t0).isEmpty)
    }

    @Test func aSecondCommandWithALiveTaskTagIsTaskInProgress() {
        var s = makeSession(FakePort())
        _ = s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 65536), header: anyHeader, now: t0)
        #expect(rejects(s.receive(command(itt: 1, cmdSN: 11, read: true, edtl: 512), header: anyHeader, now: t0))
                == [.taskInProgress])
    }

    @Test func immediateDataBeyondFirstBurstOrEDTLIsAProtocolError() {
        var s = makeSession(FakePort())
        let tooMuch = command(itt: 1, cmdSN: 10, write: true, edtl: 65536, immediate: [UInt8](repeating: 1, count: 8193))
        #expect(rejects(s.receive(tooMuch, header: anyHeader, now: t0)) == [.protocolError])
        let beyondEDTL = command(itt: 2, cmdSN: 10, write: true, edtl: 512, immediate: [UInt8](repeating: 1, count: 1024))
        #expect(rejects(s.receive(beyondEDTL, header: anyHeader, now: t0)) == [.protocolError])
        let onARead = command(itt: 3, cmdSN: 10, read: true, edtl: 512, immediate: [UInt8](repeating: 1, count: 512))
        #expect(rejects(s.receive(onARead, header: anyHeader, now: t0)) == [.protocolError])
    }

    @Test func unsolicitedDataWithInitialR2TYesEndsTheCommand() {
        var s = makeSession(FakePort()) { $0.initialR2T = true }
        _ = s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 8192), header: anyHeader, now: t0)
        // ABORTED COMMAND, 0C/0C UNEXPECTED UNSOLICITED DATA
        #expect(ascq(senseOf(s.receive(dataOut(itt: 1, count: 512), header: anyHeader, now: t0))) == [0x0B, 0x0C, 0x0C])
    }

    @Test func r2tAbuse() {
        // Data-Out under a transfer tag the target never issued: 4B/01 INVALID TARGET PORT TRANSFER TAG RECEIVED.
        var s = makeSession(FakePort()) { $0.initialR2T = true }
        guard case .readyToTransfer(let r2t) = sent(s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 8192),
                                                                header: anyHeader, now: t0)).first
        else { Issue.record("expected R2T"); return }
        #expect(ascq(senseOf(s.receive(dataOut(itt: 1, ttt: r2t.targetTransferTag &+ 99, count: 512), header: anyHeader, now: t0)))
                == [0x0B, 0x4B, 0x01])
        // More data than the R2T asked for: 4B/02 TOO MUCH WRITE DATA.
        var t = makeSession(FakePort()) { $0.initialR2T = true }
        guard case .readyToTransfer(let r2) = sent(t.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 4096),
                                                               header: anyHeader, now: t0)).first
        else { Issue.record("expected R2T"); return }
        #expect(ascq(senseOf(t.receive(dataOut(itt: 1, ttt: r2.targetTransferTag, count: 8192), header: anyHeader, now: t0)))
                == [0x0B, 0x4B, 0x02])
        // Data at an offset other than the one expected: 4B/05 DATA OFFSET ERROR.
        var u = makeSession(FakePort()) { $0.initialR2T = true }
        guard case .readyToTransfer(let r3) = sent(u.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 4096),
                                                               header: anyHeader, now: t0)).first
        else { Issue.record("expected R2T"); return }
        #expect(ascq(senseOf(u.receive(dataOut(itt: 1, ttt: r3.targetTransferTag, offset: 512, count: 512),
                                       header: anyHeader, now: t0))) == [0x0B, 0x4B, 0x05])
        #expect(u.activeTaskCount == 0)
    }

    @Test func dataDigestErrorOnDataOutEndsTheCommandAndKeepsTheConnection() {
        var s = makeSession(FakePort()) { $0.initialR2T = true }
        _ = s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 4096), header: anyHeader, now: t0)
        var header = BasicHeaderSegment(opcode: InitiatorOpcode.dataOut.rawValue)
        header.set(16, UInt32(1))
        let actions = s.receiveFramingError(.dataDigestMismatch(header))
        #expect(rejects(actions) == [.dataDigestError])
        #expect(ascq(senseOf(actions)) == [0x0B, 0x47, 0x05])
        #expect(!s.isClosed)
    }

    @Test func headerDigestErrorAndOversizeSegmentCloseTheConnection() {
        var s = makeSession(FakePort())
        #expect(s.receiveFramingError(.headerDigestMismatch).contains { if case .close = $0 { true } else { false } })
        var t = makeSession(FakePort())
        let actions = t.receiveFramingError(.dataSegmentTooLong(anyHeader, length: 1 << 24))
        #expect(rejects(actions) == [.protocolError])
        #expect(actions.contains { if case .close = $0 { true } else { false } })
    }

    @Test func hugeExpectedLengthsAllocateNothingUpFront() {
        // 4 GiB - 1 write commands queued behind a CmdSN gap: their buffers must not be
        // allocated at EDTL size (128 × 4 GiB would end the process).
        var s = makeSession(FakePort(), window: 128)
        for i in 1..<128 {
            _ = s.receive(command(itt: UInt32(i), cmdSN: 10 + UInt32(i), write: true, edtl: 0xFFFF_FFFF), header: anyHeader, now: t0)
        }
        #expect(s.activeTaskCount == 127)
    }

    @Test func textRequestFloodIsRefused() {
        var s = makeSession(FakePort(), window: 1024)
        var reasons: [RejectReason] = []
        let chunk = text([("X-flood", String(repeating: "a", count: 1000))])
        for i in 0..<80 {
            let request = TextRequest(isImmediate: true, isFinal: false, continue: true, lun: 0, initiatorTaskTag: 5,
                                      targetTransferTag: 0xFFFF_FFFF, cmdSN: 10, expStatSN: UInt32(i), text: chunk)
            reasons += rejects(s.receive(.text(request), header: anyHeader, now: t0))
        }
        #expect(reasons == [.protocolError])
    }
}

/// xorshift64*: the same sequence for the same seed on every run and platform.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

/// A random, mostly plausible initiator PDU: a real opcode most of the time, header fields
/// mutated, data segment lengths that sometimes lie.
func randomPDU(_ g: inout SeededGenerator) -> [UInt8] {
    var h = [UInt8](repeating: 0, count: 48)
    for i in 0..<48 { h[i] = UInt8.random(in: 0...255, using: &g) }
    let opcodes: [UInt8] = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x1C, 0x3F]
    h[0] = (Bool.random(using: &g) ? 0x40 : 0) | opcodes.randomElement(using: &g)!
    h[4] = 0  // TotalAHSLength: mostly none
    if Int.random(in: 0..<8, using: &g) == 0 { h[4] = UInt8.random(in: 0...3, using: &g) }
    let length = [0, 0, 48, 512, 4096, Int.random(in: 0...9000, using: &g)].randomElement(using: &g)!
    h[5] = UInt8((length >> 16) & 0xFF); h[6] = UInt8((length >> 8) & 0xFF); h[7] = UInt8(length & 0xFF)
    // Small, colliding task tags and CmdSNs near the window make the state machine work.
    h[16] = 0; h[17] = 0; h[18] = 0; h[19] = UInt8.random(in: 0...7, using: &g)
    h[24] = 0; h[25] = 0; h[26] = 0; h[27] = UInt8.random(in: 8...20, using: &g)
    let ahs = Int(h[4]) * 4
    var actual = length + ahs
    if Int.random(in: 0..<10, using: &g) == 0 { actual = Int.random(in: 0...actual, using: &g) }  // truncated
    let padded = (actual + 3) & ~3
    return h + (0..<padded).map { _ in UInt8.random(in: 0...255, using: &g) }
}

@Suite("Seeded random PDUs through framing, decoding and the session machine")
struct RandomPDUTests {
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func randomStreamsNeverCrashAndStayBounded(seed: UInt64) throws {
        var g = SeededGenerator(seed: seed)
        var framer = PDUFramer(maxDataSegmentLength: 8192)
        var session = makeSession(FakePort(), window: 16)
        var stream = ByteBuffer()
        var maxTasks = 0
        for _ in 0..<3000 {
            stream.writeBytes(randomPDU(&g))
            while true {
                let raw: RawPDU?
                do {
                    raw = try framer.next(from: &stream)
                } catch {
                    _ = session.receiveFramingError(error)
                    // A framing error that closes: the connection (and its buffer) is gone.
                    framer = PDUFramer(maxDataSegmentLength: 8192)
                    session = makeSession(FakePort(), window: 16)
                    stream = ByteBuffer()
                    break
                }
                guard let raw else { break }
                let actions: [SessionAction]
                do {
                    actions = session.receive(try InitiatorPDU(decoding: raw), header: raw.header, now: t0)
                } catch {
                    actions = session.receiveMalformed(raw.header, error: error, now: t0)
                }
                for case .execute(let itt, _, _) in actions {
                    _ = session.completed(initiatorTaskTag: itt, result: CommandResult(status: 0))
                }
                if session.isClosed {
                    session = makeSession(FakePort(), window: 16)
                }
                maxTasks = max(maxTasks, session.activeTaskCount)
            }
            // A stream that lies about lengths never grows without bound: the framer refuses
            // segments over 8192 bytes, so at most one PDU is ever pending.
            #expect(stream.readableBytes <= 48 + 1020 + 8192 + 8 + 9000)
            if stream.readableBytes > 48 + 1020 + 8192 + 8 { stream = ByteBuffer() }
        }
        // Tasks are bounded by the command window plus immediate commands in flight (tags 0–7).
        #expect(maxTasks <= 16 + 8)
    }
}
