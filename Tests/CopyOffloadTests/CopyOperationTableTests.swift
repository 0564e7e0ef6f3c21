import CopyOffload
import NIOCore
import SCSI
import Testing

@Suite("Copy operation state machine")
struct CopyOperationTableTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let unit = CopyUnitID(targetName: "iqn.t", lun: 0)

    func key(_ listID: UInt32, initiator: String = "i1") -> CopyListKey {
        CopyListKey(initiatorPort: initiator, targetPort: "t", unit: unit, listID: listID)
    }

    func table() -> CopyOperationTable {
        CopyOperationTable(heldResultsLifetime: .seconds(60), maximumRunning: 4)
    }

    @Test("A list ID that names a running copy of the same nexus: OPERATION IN PROGRESS (00/16)")
    func duplicateRunning() throws {
        var table = self.table()
        #expect(try table.begin(key(1), format: .lid1, usage: .hold, now: t0))
        #expect(throws: CopyError.operationInProgress) { try table.begin(key(1), format: .lid1, usage: .noHold, now: t0) }
        #expect(CopyError.operationInProgress.sense?.encodeFixed() == fixedSense(0x05, 0x00, 0x16))
        // Another nexus, or another list ID, is independent.
        #expect(try table.begin(key(1, initiator: "i2"), format: .lid1, usage: .hold, now: t0))
        #expect(try table.begin(key(2), format: .lid1, usage: .hold, now: t0))
    }

    @Test("LIST ID USAGE 11b tracks nothing")
    func untracked() throws {
        var table = self.table()
        #expect(try table.begin(key(0), format: .lid1, usage: .none, now: t0) == false)
        #expect(table.operations.isEmpty)
    }

    @Test("Held results (00b) survive the copy; a successful copy is freed by its status")
    func heldUntilRead() throws {
        var table = self.table()
        _ = try table.begin(key(1), format: .lid1, usage: .hold, now: t0)
        table.progress(key(1), segmentsProcessed: 0, bytesTransferred: 512)
        let r1 = table.read(key(1), .statusLID1, now: t0)
        #expect(r1?.state == .running(abortRequested: false))
        table.finish(key(1), .completed, segmentsProcessed: 1, bytesTransferred: 4096, now: t0)
        let first = table.read(key(1), .statusLID1, now: t0)
        let read = try #require(first)
        #expect(read.bytesTransferred == 4096 && read.segmentsProcessed == 1)
        let r2 = table.read(key(1), .statusLID1, now: t0)
        #expect(r2 == nil)
    }

    @Test("A failed copy's results stay for FAILURE DETAILS after its LID1 status is read")
    func failedHeldForDetails() throws {
        var table = self.table()
        _ = try table.begin(key(3), format: .lid1, usage: .hold, now: t0)
        let sense = SenseData(key: .copyAborted, code: AdditionalSenseCode(0x0D, 0x01))
        table.finish(key(3), .failed(sense), segmentsProcessed: 0, bytesTransferred: 0, now: t0)
        let r3 = table.read(key(3), .statusLID1, now: t0)
        #expect(r3 != nil)
        let r4 = table.read(key(3), .failureDetails, now: t0)
        #expect(r4?.state == .finished(.failed(sense), at: t0))
        let r5 = table.read(key(3), .failureDetails, now: t0)
        #expect(r5 == nil)
    }

    @Test("No-hold (10b) results are dropped when the copy ends; a finished list ID can be reused")
    func noHoldAndReuse() throws {
        var table = self.table()
        _ = try table.begin(key(1), format: .lid1, usage: .noHold, now: t0)
        table.finish(key(1), .completed, segmentsProcessed: 1, bytesTransferred: 1, now: t0)
        #expect(table.operations.isEmpty)
        _ = try table.begin(key(1), format: .lid1, usage: .hold, now: t0)
        table.finish(key(1), .completed, segmentsProcessed: 1, bytesTransferred: 1, now: t0)
        #expect(try table.begin(key(1), format: .lid1, usage: .hold, now: t0))
    }

    @Test("Held results expire after their lifetime (time injected)")
    func expiry() throws {
        var table = self.table()
        _ = try table.begin(key(1), format: .lid4, usage: .hold, now: t0)
        table.finish(key(1), .completed, segmentsProcessed: 1, bytesTransferred: 1, now: t0)
        #expect(table.nextDeadline == t0 + .seconds(60))
        table.expire(now: t0 + .seconds(59))
        #expect(table.operations.count == 1)
        let r6 = table.read(key(1), .statusLID4, now: t0 + .seconds(61))
        #expect(r6 == nil)
    }

    @Test("COPY OPERATION ABORT flags only running copies")
    func abort() throws {
        var table = self.table()
        let r7 = table.requestAbort(key(1))
        #expect(r7 == false)
        _ = try table.begin(key(1), format: .lid1, usage: .hold, now: t0)
        let r8 = table.requestAbort(key(1))
        #expect(r8)
        #expect(table.isAbortRequested(key(1)))
        table.finish(key(1), .aborted, segmentsProcessed: 0, bytesTransferred: 0, now: t0)
        let r9 = table.requestAbort(key(1))
        #expect(r9 == false)
        let r10 = table.read(key(1), .statusLID4, now: t0)
        #expect(r10?.state == .finished(.aborted, at: t0))
    }

    @Test("Nexus loss frees held results and stops running copies without holding their results")
    func nexusLoss() throws {
        var table = self.table()
        _ = try table.begin(key(1), format: .lid1, usage: .hold, now: t0)
        table.finish(key(1), .completed, segmentsProcessed: 1, bytesTransferred: 1, now: t0)
        _ = try table.begin(key(2), format: .lid1, usage: .hold, now: t0)
        _ = try table.begin(key(3, initiator: "other"), format: .lid1, usage: .hold, now: t0)
        table.nexusLost(initiatorPort: "i1", targetPort: "t")
        #expect(table.operations[key(1)] == nil)
        #expect(table.isAbortRequested(key(2)))
        #expect(!table.isAbortRequested(key(3, initiator: "other")))
        table.finish(key(2), .aborted, segmentsProcessed: 0, bytesTransferred: 0, now: t0)
        #expect(table.operations[key(2)] == nil)
    }

    @Test("More running copies than the limit: refused")
    func concurrencyLimit() throws {
        var table = CopyOperationTable(heldResultsLifetime: .seconds(1), maximumRunning: 1)
        _ = try table.begin(key(1), format: .lid1, usage: .hold, now: t0)
        #expect(throws: CopyError.operationInProgress) { try table.begin(key(2), format: .lid1, usage: .hold, now: t0) }
    }
}
