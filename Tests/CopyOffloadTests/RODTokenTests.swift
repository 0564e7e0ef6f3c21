import BlockStores
@testable import CopyOffload
import Foundation
import NIOCore
import SCSI
import Testing

// MARK: Helpers

/// A hand-driven clock.
final class ManualClock: Sendable {
    private let value = LockedValue(NIODeadline.uptimeNanoseconds(1_000_000_000))
    var now: NIODeadline { value.withLock { $0 } }
    func advance(_ amount: TimeAmount) { value.withLock { $0 = $0 + amount } }
}

/// Background work that runs only when the test says so.
final class HeldWork: Sendable {
    private let queue = LockedValue<[@Sendable () -> Void]>([])
    func submit(_ work: @escaping @Sendable () -> Void) { queue.withLock { $0.append(work) } }
    var pending: Int { queue.withLock { $0.count } }
    func runAll() {
        let work = queue.withLock { q -> [@Sendable () -> Void] in defer { q = [] }; return q }
        for item in work { item() }
    }
}

func rangeDescriptor(_ lba: UInt64, _ blocks: UInt32) -> [UInt8] {
    var d = [UInt8](repeating: 0, count: 16)
    for i in 0..<8 { d[i] = UInt8(truncatingIfNeeded: lba >> (56 - 8 * UInt64(i))) }
    for i in 0..<4 { d[8 + i] = UInt8(truncatingIfNeeded: blocks >> (24 - 8 * UInt32(i))) }
    return d
}

func be(_ value: UInt64, _ bytes: Int) -> [UInt8] {
    (0..<bytes).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64(bytes - 1 - $0))) }
}

func populateList(_ ranges: [(UInt64, UInt32)], immediate: Bool = false, type: UInt32? = nil, timeout: UInt32 = 0) -> [UInt8] {
    let descriptors = ranges.flatMap { rangeDescriptor($0.0, $0.1) }
    var list: [UInt8] = be(UInt64(14 + descriptors.count), 2)
    list += [(immediate ? 0x01 : 0) | (type != nil ? 0x02 : 0), 0]
    list += be(UInt64(timeout), 4) + be(UInt64(type ?? 0), 4) + [0, 0] + be(UInt64(descriptors.count), 2)
    return list + descriptors
}

func writeUsingTokenList(_ token: [UInt8], _ ranges: [(UInt64, UInt32)], offset: UInt64 = 0, deleteToken: Bool = false,
                         immediate: Bool = false) -> [UInt8] {
    let descriptors = ranges.flatMap { rangeDescriptor($0.0, $0.1) }
    var list: [UInt8] = be(UInt64(534 + descriptors.count), 2)
    list += [(immediate ? 0x01 : 0) | (deleteToken ? 0x02 : 0)] + [UInt8](repeating: 0, count: 5)
    list += be(offset, 8) + token + [UInt8](repeating: 0, count: 6) + be(UInt64(descriptors.count), 2)
    return list + descriptors
}

func zeroToken() -> [UInt8] {
    var token = [UInt8](repeating: 0, count: 512)
    token[0] = 0xFF; token[1] = 0xFF; token[2] = 0x00; token[3] = 0x01
    token[6] = 0x01; token[7] = 0xF8
    return token
}

/// Two targets: "iqn.t" with LUNs 0 and 1, "iqn.u" with LUN 0; 2 MiB each, 512-byte blocks.
final class TokenBench: Sendable {
    let clock = ManualClock()
    let held = HeldWork()
    let registry: CopyUnitRegistry
    let managers: [String: CopyManager]
    let nexus = ITNexus(initiatorPortName: "iqn.i,i,0x1", targetPortName: "iqn.t,t,0x1", id: 1)
    let blocks: UInt64 = 4096

    init(limits: RODTokenLimits = RODTokenLimits()) {
        let clock = self.clock
        let tokens = RODTokenStore(clock: { clock.now }, makeSnapshotStore: { MemoryBlockStore(byteCount: max($0, 1)) })
        let registry = CopyUnitRegistry(tokens: tokens)
        self.registry = registry
        for (target, lun) in [("iqn.t", UInt16(0)), ("iqn.t", 1), ("iqn.u", 0)] {
            let id = CopyUnitID(targetName: target, lun: lun)
            let store = GuardedBlockStore(MemoryBlockStore(byteCount: 4096 * 512), unit: id, tokens: tokens)
            let naa = Designator(codeSet: 1, association: 0, type: 3, value: [0x60, 0, 0, 0, 0, 0, UInt8(lun), target == "iqn.t" ? 1 : 2])
            registry.register(CopyUnit(id: id, designators: [naa], blockSize: 512, blockCount: 4096, store: store,
                                       isThinProvisioned: true))
        }
        let held = self.held
        managers = Dictionary(uniqueKeysWithValues: ["iqn.t", "iqn.u"].map { name in
            (name, CopyManager(registry: registry, tokenLimits: limits, clock: { clock.now },
                               background: { held.submit($0) }))
        })
    }

    func unit(_ target: String = "iqn.t", _ lun: UInt16 = 0) -> CopyUnit {
        registry.unit(CopyUnitID(targetName: target, lun: lun))!
    }

    func manager(_ target: String = "iqn.t") -> CopyManager { managers[target]! }

    func write(_ bytes: [UInt8], lba: UInt64, target: String = "iqn.t", lun: UInt16 = 0) throws {
        try fill(unit(target, lun).store, bytes, at: lba * 512)
    }

    func read(lba: UInt64, blocks: Int, target: String = "iqn.t", lun: UInt16 = 0) throws -> [UInt8] {
        try contents(unit(target, lun).store, at: lba * 512, count: blocks * 512)
    }

    /// POPULATE TOKEN then RRTI: the token.
    func populate(_ ranges: [(UInt64, UInt32)], type: UInt32? = nil, timeout: UInt32 = 0, listID: UInt32 = 1,
                  lun: UInt16 = 0) throws(CopyError) -> [UInt8] {
        let unit = CopyUnitID(targetName: "iqn.t", lun: lun)
        try manager().populateToken(populateList(ranges, type: type, timeout: timeout), listID: listID, unit: unit, nexus: nexus)
        let info = try manager().rodTokenInformation(listID: listID, unit: unit, nexus: nexus)
        return Array(info[(info.count - 512)...])
    }

    func writeUsing(_ token: [UInt8], _ ranges: [(UInt64, UInt32)], offset: UInt64 = 0, deleteToken: Bool = false,
                    immediate: Bool = false, listID: UInt32 = 2, target: String = "iqn.t", lun: UInt16 = 1) throws(CopyError) {
        try manager(target).writeUsingToken(
            writeUsingTokenList(token, ranges, offset: offset, deleteToken: deleteToken, immediate: immediate),
            listID: listID, unit: CopyUnitID(targetName: target, lun: lun), nexus: nexus)
    }

    /// The fixed sense of what `body` throws (nil if it succeeds).
    func sense(_ body: () throws -> Void) -> [UInt8]? {
        do {
            try body()
            return nil
        } catch let error as CopyError {
            return error.sense?.encodeFixed() ?? []
        } catch {
            return [0xFF]
        }
    }

    func information(listID: UInt32 = 2, lun: UInt16 = 1, target: String = "iqn.t") throws(CopyError) -> [UInt8] {
        try manager(target).rodTokenInformation(listID: listID, unit: CopyUnitID(targetName: target, lun: lun), nexus: nexus)
    }
}

// MARK: Tests

@Suite("ROD token authenticator")
struct SipHashTests {
    @Test("SipHash-2-4 reference vectors (key 00..0F; empty input and 00..0E)")
    func vectors() {
        let key: [UInt8] = Array(0...15)
        var k0: UInt64 = 0, k1: UInt64 = 0
        for i in 0..<8 { k0 |= UInt64(key[i]) << (8 * UInt64(i)); k1 |= UInt64(key[8 + i]) << (8 * UInt64(i)) }
        #expect(SipHash24.hash([], 0..<0, key: k0, k1) == 0x726f_db47_dd0e_0e31)
        #expect(SipHash24.hash(Array(0...14), 0..<15, key: k0, k1) == 0xa129_ca61_49be_45e5)
    }
}

@Suite("ROD token state machine")
struct RODTokenMachineTests {
    let t0 = NIODeadline.uptimeNanoseconds(5_000_000_000)

    func machine() -> RODTokenMachine {
        var m = RODTokenMachine(inactivityTimeout: .seconds(10), tombstoneLifetime: .seconds(30))
        _ = m.handle(.populated(now: t0))
        return m
    }

    @Test("Idle tokens expire after the inactivity timeout; tombstones are forgotten later")
    func expiry() {
        var m = machine()
        #expect(m.deadline == t0 + .seconds(10))
        #expect(m.handle(.tick(now: t0 + .seconds(9))) == [])
        #expect(m.handle(.tick(now: t0 + .seconds(10))) == [.releaseStorage])
        #expect(m.state == .ended(.expired, at: t0 + .seconds(10)))
        #expect(m.handle(.useRequested(now: t0 + .seconds(11))) == [.refuseUse(.tokenExpired)])
        #expect(m.handle(.tick(now: t0 + .seconds(39))) == [])
        #expect(m.handle(.tick(now: t0 + .seconds(40))) == [.forget])
    }

    @Test("The inactivity timer does not run while the token is in use, and restarts when the last writer ends")
    func inUse() {
        var m = machine()
        #expect(m.handle(.useRequested(now: t0)) == [.grantUse])
        #expect(m.handle(.useRequested(now: t0)) == [.grantUse])
        #expect(m.state == .inUse(writers: 2, deletePending: false))
        #expect(m.handle(.tick(now: t0 + .seconds(100))) == [])
        #expect(m.handle(.useEnded(now: t0 + .seconds(100), deleteToken: false)) == [])
        #expect(m.handle(.useEnded(now: t0 + .seconds(101), deleteToken: false)) == [])
        #expect(m.state == .valid(idleSince: t0 + .seconds(101)))
        #expect(m.deadline == t0 + .seconds(111))
    }

    @Test("DEL_TKN deletes the token when the last writer ends; new uses meanwhile get TOKEN DELETED")
    func deletion() {
        var m = machine()
        _ = m.handle(.useRequested(now: t0))
        _ = m.handle(.useRequested(now: t0))
        #expect(m.handle(.useEnded(now: t0, deleteToken: true)) == [])
        #expect(m.handle(.useRequested(now: t0)) == [.refuseUse(.tokenDeleted)])
        #expect(m.handle(.useEnded(now: t0 + .seconds(1), deleteToken: false)) == [.releaseStorage])
        #expect(m.state == .ended(.deleted, at: t0 + .seconds(1)))
    }

    @Test("Source writes cancel, resets revoke, from every live state; terminal states stay")
    func cancelAndRevoke() {
        for live in 0..<3 {
            var m = RODTokenMachine(inactivityTimeout: .seconds(10), tombstoneLifetime: .seconds(30))
            if live > 0 { _ = m.handle(.populated(now: t0)) }
            if live > 1 { _ = m.handle(.useRequested(now: t0)) }
            var n = m
            #expect(m.handle(.sourceModified(now: t0)) == [.releaseStorage])
            #expect(m.useError == .tokenCancelled)
            #expect(m.handle(.revoked(now: t0)) == [])
            #expect(m.useError == .tokenCancelled)
            #expect(n.handle(.revoked(now: t0)) == [.releaseStorage])
            #expect(n.useError == .tokenRevoked)
        }
    }

    @Test("A token still being populated cannot be used; a failed populate is forgotten")
    func populating() {
        var m = RODTokenMachine(inactivityTimeout: .seconds(10), tombstoneLifetime: .seconds(30))
        #expect(m.handle(.useRequested(now: t0)) == [.refuseUse(.tokenUnknown)])
        #expect(m.handle(.populateFailed) == [.releaseStorage, .forget])
    }
}

@Suite("POPULATE TOKEN and WRITE USING TOKEN")
struct TokenCopyTests {
    @Test("Token bytes: type, length, identifier, creator CSCD, bytes represented, block length; RRTI header")
    func tokenLayout() throws {
        let bench = TokenBench()
        try bench.manager().populateToken(populateList([(8, 16), (100, 4)], type: 0x0001_0000), listID: 7,
                                          unit: bench.unit().id, nexus: bench.nexus)
        let info = try bench.manager().rodTokenInformation(listID: 7, unit: bench.unit().id, nexus: bench.nexus)
        #expect(info.count == 32 + 4 + 2 + 512)
        #expect(Array(info[0..<4]) == be(UInt64(info.count - 4), 4))
        #expect(info[4] == 0x10)  // response to POPULATE TOKEN
        #expect(info[5] == 0x01)  // completed
        #expect(Array(info[8..<12]) == [0xFF, 0xFF, 0xFF, 0xFE])
        #expect(info[15] == 0xF1)  // logical blocks
        #expect(Array(info[16..<24]) == be(20, 8))
        #expect(Array(info[32..<36]) == be(514, 4))
        let token = Array(info[38...])
        #expect(Array(token[0..<4]) == [0x00, 0x01, 0x00, 0x00])
        #expect(Array(token[6..<8]) == [0x01, 0xF8])
        #expect(Array(token[8..<16]) == be(1, 8))
        #expect(token[16] == 0xE4)
        #expect(Array(token[20..<24]) == [0x01, 0x03, 0x00, 0x08])
        #expect(Array(token[24..<32]) == [0x60, 0, 0, 0, 0, 0, 0, 1])
        #expect(Array(token[45..<48]) == [0x00, 0x02, 0x00])
        #expect(Array(token[48..<64]) == be(0, 8) + be(20 * 512, 8))
        #expect(Array(token[96..<100]) == be(512, 4))
        // Read once: the information is gone.
        #expect(bench.sense { _ = try bench.manager().rodTokenInformation(listID: 7, unit: bench.unit().id, nexus: bench.nexus) }
                == fixedSense(0x05, 0x24, 0x00, field: 2, cd: true))
    }

    @Test("WRITE USING TOKEN copies the ranges in ROD order, from OFFSET INTO ROD, to another LUN")
    func copies() throws {
        let bench = TokenBench()
        let a = pattern(16 * 512, seed: 3), b = pattern(8 * 512, seed: 9)
        try bench.write(a, lba: 10)
        try bench.write(b, lba: 200)
        let token = try bench.populate([(10, 16), (200, 8)], type: 0x0001_0000)
        try bench.writeUsing(token, [(0, 24)])
        #expect(try bench.read(lba: 0, blocks: 24, lun: 1) == a + b)
        // OFFSET INTO ROD 12 blocks, into two destination ranges.
        try bench.writeUsing(token, [(1000, 6), (2000, 6)], offset: 12, listID: 3)
        let rod = a + b
        #expect(try bench.read(lba: 1000, blocks: 6, lun: 1) == Array(rod[(12 * 512)..<(18 * 512)]))
        #expect(try bench.read(lba: 2000, blocks: 6, lun: 1) == Array(rod[(18 * 512)..<(24 * 512)]))
        let info = try bench.information(listID: 3)
        #expect(info[4] == 0x11 && info[5] == 0x01 && info[15] == 0xF1)
        #expect(Array(info[16..<24]) == be(12, 8))
        #expect(Array(info[32..<36]) == [0, 0, 0, 0])  // no token descriptor after WRITE USING TOKEN
    }

    @Test("Another target of the process can use the token")
    func otherTarget() throws {
        let bench = TokenBench()
        let a = pattern(4 * 512, seed: 5)
        try bench.write(a, lba: 0)
        let token = try bench.populate([(0, 4)], type: 0x0001_0000)
        try bench.writeUsing(token, [(50, 4)], target: "iqn.u", lun: 0)
        #expect(try bench.read(lba: 50, blocks: 4, target: "iqn.u", lun: 0) == a)
    }

    @Test("A ROD shorter than the destination: what it holds is written, status 03h with the real transfer count")
    func partial() throws {
        let bench = TokenBench()
        let a = pattern(4 * 512, seed: 2)
        try bench.write(a, lba: 0)
        try bench.write([UInt8](repeating: 0xAB, count: 8 * 512), lba: 0, lun: 1)
        let token = try bench.populate([(0, 4)])
        try bench.writeUsing(token, [(0, 8)], offset: 1)
        let info = try bench.information()
        #expect(info[5] == 0x03)
        #expect(Array(info[16..<24]) == be(3, 8))
        #expect(try bench.read(lba: 0, blocks: 3, lun: 1) == Array(a[512...]))
        #expect(try bench.read(lba: 3, blocks: 5, lun: 1) == [UInt8](repeating: 0xAB, count: 5 * 512))
        // An offset at or past the end of the ROD: INVALID FIELD IN PARAMETER LIST at OFFSET INTO ROD.
        #expect(bench.sense { try bench.writeUsing(token, [(0, 1)], offset: 4, listID: 9) }
                == fixedSense(0x05, 0x26, 0x00, field: 8))
    }

    @Test("DEL_TKN: the token is deleted after the write; later uses get TOKEN DELETED (23/09)")
    func deleteToken() throws {
        let bench = TokenBench()
        let token = try bench.populate([(0, 4)])
        try bench.writeUsing(token, [(0, 4)], deleteToken: true)
        #expect(bench.sense { try bench.writeUsing(token, [(0, 4)], listID: 3) } == fixedSense(0x05, 0x23, 0x09))
        #expect(bench.manager().tokens.tokens.first?.state == "deleted")
        // The failure is held for RECEIVE ROD TOKEN INFORMATION: status 02h, CHECK CONDITION, the sense.
        let info = try bench.information(listID: 3)
        #expect(info[4] == 0x11 && info[5] == 0x02 && info[12] == 0x02 && info[13] == 18 && info[14] == 18)
        #expect(Array(info[32..<50]) == fixedSense(0x05, 0x23, 0x09))
        #expect(Array(info[50..<54]) == [0, 0, 0, 0])
    }

    @Test("Inactivity timeout: TOKEN EXPIRED (23/07), then TOKEN UNKNOWN (23/04) once the tombstone goes")
    func expiry() throws {
        var limits = RODTokenLimits()
        limits.tombstoneLifetime = 100
        let bench = TokenBench(limits: limits)
        let token = try bench.populate([(0, 4)], timeout: 5)
        bench.clock.advance(.seconds(4))
        try bench.writeUsing(token, [(0, 4)])  // a use restarts the timer
        bench.clock.advance(.seconds(4))
        try bench.writeUsing(token, [(0, 4)], listID: 3)
        bench.clock.advance(.seconds(5))
        bench.manager().tokens.tick()
        #expect(bench.sense { try bench.writeUsing(token, [(0, 4)], listID: 4) } == fixedSense(0x05, 0x23, 0x07))
        bench.clock.advance(.seconds(100))
        #expect(bench.manager().tokens.tick() == nil)
        #expect(bench.sense { try bench.writeUsing(token, [(0, 4)], listID: 5) } == fixedSense(0x05, 0x23, 0x04))
    }

    @Test("Altered tokens: TOKEN CORRUPT (23/05); bad length field 23/0A; unknown ROD type 23/01; foreign 23/04")
    func badTokens() throws {
        let bench = TokenBench()
        let token = try bench.populate([(0, 4)])
        var altered = token
        altered[60] ^= 0x01  // claims a different size
        #expect(bench.sense { try bench.writeUsing(altered, [(0, 4)]) } == fixedSense(0x05, 0x23, 0x05))
        var length = token
        length[7] = 0xF0
        #expect(bench.sense { try bench.writeUsing(length, [(0, 4)]) } == fixedSense(0x05, 0x23, 0x0A))
        var type = token
        type[3] = 0x77
        #expect(bench.sense { try bench.writeUsing(type, [(0, 4)]) } == fixedSense(0x05, 0x23, 0x01))
        var foreign = token
        foreign[448] ^= 0xFF  // another copy manager instance
        #expect(bench.sense { try bench.writeUsing(foreign, [(0, 4)]) } == fixedSense(0x05, 0x23, 0x04))
        // The genuine token still works.
        try bench.writeUsing(token, [(0, 4)])
    }

    @Test("Change-vulnerable tokens are cancelled by a write to their source (23/08); others are not")
    func changeVulnerable() throws {
        let bench = TokenBench()
        let vulnerable = try bench.populate([(0, 8)], type: 0x0080_0001, listID: 1)
        let reference = try bench.populate([(0, 8)], type: 0x0001_0000, listID: 2)
        try bench.write([1, 2, 3], lba: 100)  // outside the ranges: nothing happens
        try bench.writeUsing(vulnerable, [(0, 8)], listID: 3)
        try bench.write([1, 2, 3], lba: 7)
        #expect(bench.sense { try bench.writeUsing(vulnerable, [(0, 8)], listID: 4) } == fixedSense(0x05, 0x23, 0x08))
        try bench.writeUsing(reference, [(0, 8)], listID: 5)
        // Deallocation (UNMAP, WRITE SAME with UNMAP) counts as a write.
        let second = try bench.populate([(0, 8)], type: 0x0080_0001, listID: 6)
        try bench.unit().store.deallocate(at: 0, length: 512)
        #expect(bench.sense { try bench.writeUsing(second, [(0, 8)], listID: 7) } == fixedSense(0x05, 0x23, 0x08))
    }

    @Test("Persistent tokens deliver the data as of POPULATE TOKEN, whatever is written afterwards")
    func persistent() throws {
        let bench = TokenBench()
        let original = pattern(32 * 512, seed: 11)
        try bench.write(original, lba: 64)
        let token = try bench.populate([(64, 32)], type: 0x0080_0002)
        // Overwrite parts of the source, twice, and deallocate another part.
        try bench.write([UInt8](repeating: 0x55, count: 4 * 512), lba: 70)
        try bench.write([UInt8](repeating: 0x66, count: 8 * 512), lba: 68)
        try bench.unit().store.deallocate(at: 90 * 512, length: 2 * 512)
        #expect(bench.manager().tokens.tokens.first?.bytesPreserved == 10 * 512)
        try bench.writeUsing(token, [(0, 32)])
        #expect(try bench.read(lba: 0, blocks: 32, lun: 1) == original)
        // A token of the default type (RTV = 0) is persistent too.
        let defaulted = try bench.populate([(64, 4)], listID: 5)
        #expect(Array(defaulted[0..<4]) == [0x00, 0x80, 0x00, 0x02])
    }

    @Test("Same LU: a persistent token copied over its own source still delivers the old data; a change-vulnerable one cancels itself (COPY ABORTED 23/08)")
    func sameLU() throws {
        let bench = TokenBench()
        let original = pattern(2048 * 512, seed: 21)
        try bench.write(original, lba: 0)
        let token = try bench.populate([(0, 2048)], type: 0x0080_0002)
        try bench.writeUsing(token, [(1024, 2048)], lun: 0)
        #expect(try bench.read(lba: 1024, blocks: 2048) == original)
        #expect(try bench.read(lba: 0, blocks: 1024) == Array(original[0..<(1024 * 512)]))
        // Change-vulnerable, destination overlapping the source: the first write cancels it.
        try bench.write(original, lba: 0)
        let vulnerable = try bench.populate([(0, 2048)], type: 0x0080_0001, listID: 5)
        #expect(bench.sense { try bench.writeUsing(vulnerable, [(1024, 2048)], listID: 6, lun: 0) }
                == fixedSense(0x0A, 0x23, 0x08))
    }

    @Test("An LU the initiator may not address (ACL, masking): EXTENDED COPY finds it unreachable (08/04); its tokens are unknown (23/04)")
    func accessControl() throws {
        let bench = TokenBench()
        let hidden = CopyUnitID(targetName: "iqn.hidden", lun: 0)
        let store = GuardedBlockStore(MemoryBlockStore(byteCount: 4096 * 512), unit: hidden, tokens: bench.registry.tokens)
        let other = ITNexus(initiatorPortName: "iqn.other,i,0x2", targetPortName: "iqn.hidden,t,0x1", id: 2)
        bench.registry.register(CopyUnit(
            id: hidden, designators: [Designator(codeSet: 1, association: 0, type: 3, value: Lists.naaOther)],
            blockSize: 512, blockCount: 4096, store: store, access: { $0.initiatorPortName.hasPrefix("iqn.other,") }))
        // EXTENDED COPY from the hidden LU into LUN 0 of iqn.t, sent by an initiator that may not see it.
        let list = Lists.lid1(cscds: [Lists.cscd(Lists.naaOther)],
                              segments: [Lists.b2b(source: 0, destination: 0xFFFF, blocks: 1, sourceLBA: 0, destinationLBA: 0)])
        let xcopy = bench.sense { try bench.manager().extendedCopy(list, format: .lid1, unit: bench.unit().id, nexus: bench.nexus) }
        #expect(xcopy.map { [$0[2], $0[12], $0[13]] } == [0x0A, 0x08, 0x04])
        // A token of the hidden LU, made by the initiator that may see it, is unknown to the other one.
        try bench.manager("iqn.t").populateToken(populateList([(0, 8)]), listID: 1, unit: hidden, nexus: other)
        let info = try bench.manager("iqn.t").rodTokenInformation(listID: 1, unit: hidden, nexus: other)
        let token = Array(info[(info.count - 512)...])
        #expect(bench.sense { try bench.writeUsing(token, [(0, 8)]) } == fixedSense(0x05, 0x23, 0x04))
    }

    @Test("LOGICAL UNIT RESET revokes the LU's tokens: TOKEN REVOKED (23/06)")
    func revoked() throws {
        let bench = TokenBench()
        let token = try bench.populate([(0, 4)])
        bench.manager().tokens.revoke(cause: "test") { $0.source == bench.unit().id }
        #expect(bench.sense { try bench.writeUsing(token, [(0, 4)]) } == fixedSense(0x05, 0x23, 0x06))
    }

    @Test("The block device zero ROD token writes zeros (deallocating on a thin LU)")
    func zeroToken() throws {
        let bench = TokenBench()
        try bench.write([UInt8](repeating: 0xEE, count: 16 * 512), lba: 0, lun: 1)
        try bench.writeUsing(CopyOffloadTests.zeroToken(), [(2, 4), (10, 2)])
        let after = try bench.read(lba: 0, blocks: 16, lun: 1)
        #expect(Array(after[0..<1024]) == [UInt8](repeating: 0xEE, count: 1024))
        #expect(Array(after[1024..<3072]) == [UInt8](repeating: 0, count: 2048))
        #expect(Array(after[5120..<6144]) == [UInt8](repeating: 0, count: 1024))
        #expect(Array(after[3072..<5120]) == [UInt8](repeating: 0xEE, count: 2048))
        #expect(Array(after[6144...]) == [UInt8](repeating: 0xEE, count: 4 * 512))
    }

    @Test("IMMED: GOOD at once, RRTI reports background progress (12h), then the result")
    func immediate() throws {
        let bench = TokenBench()
        try bench.write(pattern(64 * 512), lba: 0)
        let token = try bench.populate([(0, 64)])
        try bench.writeUsing(token, [(0, 64)], immediate: true)
        #expect(bench.held.pending == 1)
        let running = try bench.information()
        #expect(running[5] == 0x12)
        #expect(Array(running[8..<12]) != [0xFF, 0xFF, 0xFF, 0xFE])
        bench.held.runAll()
        let done = try bench.information()
        #expect(done[5] == 0x01 && Array(done[16..<24]) == be(64, 8))
        #expect(try bench.read(lba: 0, blocks: 64, lun: 1) == pattern(64 * 512))
        // POPULATE TOKEN with IMMED: in progress until the background work ran.
        try bench.manager().populateToken(populateList([(0, 8)], immediate: true), listID: 40, unit: bench.unit().id,
                                          nexus: bench.nexus)
        let populating = try bench.manager().rodTokenInformation(listID: 40, unit: bench.unit().id, nexus: bench.nexus)
        #expect(populating[4] == 0x10 && populating[5] == 0x12 && Array(populating[32..<36]) == [0, 0, 0, 0])
        bench.held.runAll()
        let populated = try bench.manager().rodTokenInformation(listID: 40, unit: bench.unit().id, nexus: bench.nexus)
        #expect(populated[5] == 0x01 && populated.count == 32 + 518)
    }

    @Test("COPY OPERATION ABORT stops a background WRITE USING TOKEN: status 60h")
    func abort() throws {
        let bench = TokenBench()
        let token = try bench.populate([(0, 64)])
        try bench.writeUsing(token, [(0, 64)], immediate: true)
        try bench.manager().abort(listID: 2, unit: bench.unit("iqn.t", 1).id, nexus: bench.nexus)
        bench.held.runAll()
        let info = try bench.information()
        #expect(info[5] == 0x60 && info[12] == 0x40)
        // The token survives an aborted write.
        try bench.writeUsing(token, [(0, 64)], listID: 3)
    }

    @Test("Parameter list checks: inactivity timeout, ROD type, range count, LBA range, overlap, list length")
    func parameterChecks() throws {
        var limits = RODTokenLimits()
        limits.maximumRangeDescriptors = 2
        limits.maximumTokenTransferSize = 100
        let bench = TokenBench(limits: limits)
        let unit = bench.unit().id
        func populate(_ list: [UInt8]) -> [UInt8]? {
            bench.sense { try bench.manager().populateToken(list, listID: 1, unit: unit, nexus: bench.nexus) }
        }
        #expect(populate(populateList([(0, 1)], timeout: 601)) == fixedSense(0x05, 0x26, 0x00, field: 4))
        #expect(populate(populateList([(0, 1)], type: 0xFFFF_0001)) == fixedSense(0x05, 0x26, 0x00, field: 8))
        #expect(populate(populateList([(0, 1), (2, 1), (4, 1)])) == fixedSense(0x05, 0x26, 0x08, field: 14))
        #expect(populate(populateList([(4095, 2)])) == fixedSense(0x05, 0x21, 0x00))
        #expect(populate(populateList([(0, 8), (4, 8)])) == fixedSense(0x05, 0x26, 0x00, field: 32))
        #expect(populate(populateList([(0, 60), (100, 60)])) == fixedSense(0x05, 0x26, 0x00, field: 40))
        #expect(populate(Array(populateList([(0, 1)]).prefix(20))) == fixedSense(0x05, 0x1A, 0x00))
        var noRanges = populateList([(0, 1)])
        noRanges[15] = 0
        #expect(populate(noRanges) == fixedSense(0x05, 0x26, 0x00, field: 14))
        // A running list ID: OPERATION IN PROGRESS.
        let token = try bench.populate([(0, 4)], listID: 11)
        try bench.writeUsing(token, [(0, 4)], immediate: true, listID: 12)
        #expect(bench.sense { try bench.writeUsing(token, [(8, 4)], listID: 12) } == fixedSense(0x05, 0x00, 0x16))
    }

    @Test("ddpt 0.97's one-byte-early range descriptors: refused (21/00) unless the target accepts that layout")
    func ddptLayout() throws {
        // What ddpt 0.97 sends for PT of LBA 0x1000, 8 blocks: the descriptor at byte 15, and the
        // range descriptor length written over its first byte.
        // (captured: 00 1e 01 00 | 00000000 | 00000000 | 0000 | 0010 | 00 00 00 00 00 10 00 00 | 00 00 08 00 | 00 00 00 00)
        var list = [UInt8](repeating: 0, count: 32)
        list[1] = 0x1E
        list[15] = 0x10  // range descriptor length 0010h, over the LBA's first byte
        list[21] = 0x01  // LBA 0x100 at bytes 15-22 (the capture had 0x1000; the bench LU is smaller)
        list[26] = 0x08  // 8 blocks at bytes 23-26
        let plain = TokenBench()
        #expect(plain.sense { try plain.manager().populateToken(list, listID: 1, unit: plain.unit().id, nexus: plain.nexus) }
                == fixedSense(0x05, 0x21, 0x00))
        var limits = RODTokenLimits()
        limits.acceptDDPTRangeLayout = true
        let bench = TokenBench(limits: limits)
        try bench.manager().populateToken(list, listID: 1, unit: bench.unit().id, nexus: bench.nexus)
        #expect(bench.manager().tokens.tokens.first?.ranges.first?.lba == 0x100)
        #expect(bench.manager().tokens.tokens.first?.ranges.first?.blocks == 8)
        // A standard list is still read the standard way.
        _ = try bench.populate([(0x800, 8)], listID: 2)
        #expect(bench.manager().tokens.tokens.last?.ranges.first?.lba == 0x800)
    }

    @Test("Too many live tokens: INSUFFICIENT RESOURCES TO CREATE ROD TOKEN (55/0D)")
    func tooMany() throws {
        var limits = RODTokenLimits()
        limits.maximumTokens = 2
        let bench = TokenBench(limits: limits)
        _ = try bench.populate([(0, 1)], listID: 1)
        _ = try bench.populate([(0, 1)], listID: 2)
        #expect(bench.sense { try bench.manager().populateToken(populateList([(0, 1)]), listID: 3,
                                                                 unit: bench.unit().id, nexus: bench.nexus) }
                == fixedSense(0x05, 0x55, 0x0D))
    }

    @Test("REPORT ALL ROD TOKENS lists the live tokens of the LU (96 bytes each)")
    func reportAll() throws {
        let bench = TokenBench()
        let first = try bench.populate([(0, 1)], listID: 1)
        _ = try bench.populate([(0, 1)], listID: 2)
        let data = bench.manager().reportAllRODTokens(unit: bench.unit().id)
        #expect(data.count == 8 + 2 * 96)
        #expect(Array(data[0..<4]) == be(UInt64(4 + 2 * 96), 4))
        #expect(Array(data[8..<104]) == Array(first[0..<96]))
        #expect(bench.manager().reportAllRODTokens(unit: bench.unit("iqn.t", 1).id).count == 8)
    }

    @Test("Every transition is observed with its cause")
    func transitions() throws {
        let bench = TokenBench()
        let seen = LockedValue<[String]>([])
        bench.manager().tokens.observe { t in seen.withLock { $0.append("\(t.from)>\(t.to)") } }
        let token = try bench.populate([(0, 1)], type: 0x0080_0001)
        try bench.writeUsing(token, [(0, 1)])
        try bench.write([9], lba: 0)
        #expect(seen.withLock { $0 } == ["populating>valid", "valid>in use by 1", "in use by 1>valid", "valid>cancelled"])
    }
}

@Suite("Third-party Copy VPD page: token descriptors")
struct TokenVPDTests {
    @Test("Block Device ROD Limits, ROD Token Features and Supported ROD Types, in type order")
    func descriptors() {
        let bench = TokenBench()
        let page = bench.manager().thirdPartyCopyDescriptors(blockSize: 512)
        var types: [UInt16: [UInt8]] = [:]
        var order: [UInt16] = []
        var offset = 0
        while offset + 4 <= page.count {
            let type = UInt16(page[offset]) << 8 | UInt16(page[offset + 1])
            let length = Int(page[offset + 2]) << 8 | Int(page[offset + 3])
            types[type] = Array(page[offset..<(offset + 4 + length)])
            order.append(type)
            offset += 4 + length
        }
        #expect(offset == page.count)
        #expect(order == [0x0000, 0x0001, 0x0004, 0x0008, 0x000C, 0x0106, 0x0108, 0x8001])
        let limits = types[0x0000]!
        #expect(limits.count == 36)
        #expect(Array(limits[10..<12]) == be(64, 2))
        #expect(Array(limits[12..<16]) == be(600, 4))
        #expect(Array(limits[16..<20]) == be(60, 4))
        #expect(Array(limits[20..<28]) == be(1 << 24, 8))
        let features = types[0x0106]!
        #expect(features.count == 96 && Array(features[46..<48]) == be(48, 2) && Array(features[50..<52]) == be(0x2C, 2))
        let supported = types[0x0108]!
        #expect(Array(supported[6..<8]) == be(5 * 64, 2))
        let listed = stride(from: 8, to: supported.count, by: 64).map { Array(supported[$0..<($0 + 4)]) }
        #expect(listed == [[0, 1, 0, 0], [0, 0x80, 0, 0], [0, 0x80, 0, 1], [0, 0x80, 0, 2], [0xFF, 0xFF, 0, 1]])
        #expect(supported[8 + 4 * 64 + 4] == 0x02)  // zero token: TOKEN_IN only
        let commands = types[0x0001]!
        #expect(Array(commands[4...]).starts(with: [15, 0x83, 5, 0x00, 0x01, 0x10, 0x11, 0x1C, 0x84, 6, 0x00, 0x03, 0x04, 0x05, 0x07, 0x08]))
    }
}
