// The session machine's side of the server's unsolicited-data budget: what a command may
// make the session hold, what it holds, and the answer when the runtime has no room for it
// (BUSY with nothing else in progress, TASK SET FULL otherwise; its data dropped, its CmdSN
// consumed).
@testable import ISCSIEngine
@testable import ISCSIWire
import NIOCore
import Testing

private func statuses(_ actions: [SessionAction]) -> [UInt8] {
    sent(actions).compactMap { if case .scsiResponse(let r) = $0 { return r.status } else { return nil } }
}

private func unsolicited(itt: UInt32, offset: UInt32, count: Int, final: Bool) -> InitiatorPDU {
    .dataOut(DataOut(isFinal: final, lun: 0, initiatorTaskTag: itt, targetTransferTag: 0xFFFF_FFFF, expStatSN: 0,
                     dataSN: 0, bufferOffset: offset, data: ByteBuffer(repeating: 0xCD, count: count)))
}

@Suite("Session: unsolicited data budget")
struct UnsolicitedBudgetTests {
    @Test func reservationFollowsInitialR2TFirstBurstAndImmediateData() {
        let s = makeSession(FakePort())  // InitialR2T=No, FirstBurstLength 8192
        guard case .scsiCommand(let write) = command(itt: 1, cmdSN: 10, write: true, edtl: 65536),
              case .scsiCommand(let small) = command(itt: 2, cmdSN: 10, write: true, edtl: 2048),
              case .scsiCommand(let read) = command(itt: 3, cmdSN: 10, read: true, edtl: 65536)
        else { Issue.record("not commands"); return }
        #expect(s.unsolicitedReservation(for: write) == 8192)
        #expect(s.unsolicitedReservation(for: small) == 2048)
        #expect(s.unsolicitedReservation(for: read) == 0)
        let r2t = makeSession(FakePort()) { $0.initialR2T = true }
        guard case .scsiCommand(let withImmediate) = command(itt: 4, cmdSN: 10, write: true, edtl: 65536,
                                                             immediate: [UInt8](repeating: 1, count: 4096))
        else { Issue.record("not a command"); return }
        #expect(r2t.unsolicitedReservation(for: write) == 0)
        #expect(r2t.unsolicitedReservation(for: withImmediate) == 4096)
    }

    @Test func heldBytesFollowTheTaskUntilItCompletes() {
        var s = makeSession(FakePort())
        _ = s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 65536), header: anyHeader, now: t0)
        #expect(s.heldUnsolicitedBytes == 8192)
        _ = s.receive(command(itt: 2, cmdSN: 12, write: true, edtl: 4096), header: anyHeader, now: t0)  // queued
        #expect(s.heldUnsolicitedBytes == 8192 + 4096)
        _ = s.receive(command(itt: 9, cmdSN: 11, read: true, edtl: 512), header: anyHeader, now: t0)
        #expect(s.heldUnsolicitedBytes == 8192 + 4096)
        _ = s.receive(unsolicited(itt: 2, offset: 0, count: 4096, final: true), header: anyHeader, now: t0)
        _ = s.completed(initiatorTaskTag: 2, result: CommandResult(status: 0))
        #expect(s.heldUnsolicitedBytes == 8192)
        s.connectionLost()
        #expect(s.heldUnsolicitedBytes == 0)
    }

    @Test func refusedCommandIsBusyWhenAloneAndConsumesItsCmdSN() {
        let port = FakePort()
        var s = makeSession(port)
        let a = s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 65536), header: anyHeader, now: t0,
                          unsolicitedDataAdmitted: false)
        #expect(statuses(a) == [0x08])  // BUSY
        #expect(port.admitted.isEmpty)
        #expect(s.currentExpCmdSN == 11)
        #expect(s.heldUnsolicitedBytes == 0)
        // Its unsolicited Data-Out is dropped without an answer.
        #expect(s.receive(unsolicited(itt: 1, offset: 0, count: 8192, final: true), header: anyHeader, now: t0).isEmpty)
        // The same task tag may be used again, and is admitted when there is room.
        let again = s.receive(command(itt: 1, cmdSN: 11, write: true, edtl: 8192), header: anyHeader, now: t0)
        #expect(statuses(again).isEmpty)
        #expect(port.admitted.map(\.initiatorTaskTag) == [1])
    }

    @Test func refusedCommandIsTaskSetFullWhileOthersAreInProgress() {
        var s = makeSession(FakePort())
        _ = s.receive(command(itt: 1, cmdSN: 10, read: true, edtl: 512), header: anyHeader, now: t0)
        let a = s.receive(command(itt: 2, cmdSN: 11, write: true, edtl: 65536), header: anyHeader, now: t0,
                          unsolicitedDataAdmitted: false)
        #expect(statuses(a) == [0x28])  // TASK SET FULL
    }

    @Test func refusedCommandAheadOfExpCmdSNIsAnsweredInItsTurn() {
        let port = FakePort()
        var s = makeSession(port)
        // CmdSN 11 arrives first, without room; its data is dropped while it waits.
        #expect(s.receive(command(itt: 2, cmdSN: 11, write: true, edtl: 8192), header: anyHeader, now: t0,
                          unsolicitedDataAdmitted: false).isEmpty)
        #expect(s.receive(unsolicited(itt: 2, offset: 0, count: 8192, final: true), header: anyHeader, now: t0).isEmpty)
        #expect(s.heldUnsolicitedBytes == 0)
        let a = s.receive(command(itt: 1, cmdSN: 10, read: true, edtl: 512), header: anyHeader, now: t0)
        #expect(statuses(a) == [0x28])  // the READ is in progress
        #expect(port.admitted.map(\.initiatorTaskTag) == [1])
        #expect(s.currentExpCmdSN == 12)
    }
}
