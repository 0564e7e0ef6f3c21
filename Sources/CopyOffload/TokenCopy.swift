//
// Token-based copy (SBC-4 §5.9 POPULATE TOKEN, §5.51 WRITE USING TOKEN; SPC-4 §6.18.6
// RECEIVE ROD TOKEN INFORMATION, §6.19 REPORT ALL ROD TOKENS) on the copy manager.
//
// POPULATE TOKEN checks its parameter list and ranges, creates a token in the process-wide
// `RODTokenStore` and records the operation under its list identifier; RECEIVE ROD TOKEN
// INFORMATION returns the token. WRITE USING TOKEN recognises the token (length, type,
// instance, authenticator), asks the token's state machine for a use, and copies the ROD's
// bytes from OFFSET INTO ROD into the destination ranges in bounded chunks, checking COPY
// OPERATION ABORT, resets and the token's validity between chunks. With IMMED set either
// command returns GOOD at once and runs in the background; RRTI and RECEIVE COPY STATUS
// (LID4) report progress in logical blocks (units F1h).
//
// Choices where the standards leave room (documented in Docs/copy-offload.md):
// - RTV = 0 gets the configured default ROD type (point in time, persistent, unless the
//   target definition says otherwise); "point in time default" is served as persistent.
// - The ROD running out before the destination ranges are full is not an error: what it
//   held is written, the command completes with GOOD and the status reads 03h (completed
//   with partial ROD token usage) with the transfer count actually written.
// - A token that stops being usable while WRITE USING TOKEN copies (a change-vulnerable
//   token whose source is written, a revoked token) ends the command with COPY ABORTED and
//   the token's ASC/ASCQ; what was written so far stays and is reported.
//
import Foundation
import NIOCore
import SCSI

/// Token limits of one copy manager (the target definition's `[target.tokens]`; VPD 0x8F).
public struct RODTokenLimits: Sendable, Equatable {
    /// Seconds; used when POPULATE TOKEN's INACTIVITY TIMEOUT is 0.
    public var defaultInactivityTimeout: UInt32 = 60
    /// Seconds; a larger INACTIVITY TIMEOUT is INVALID FIELD IN PARAMETER LIST.
    public var maximumInactivityTimeout: UInt32 = 600
    /// Live tokens this copy manager holds at once (more: 55/0D).
    public var maximumTokens: Int = 1024
    /// Logical blocks one token may represent (and one WRITE USING TOKEN may write); 0: no limit.
    public var maximumTokenTransferSize: UInt64 = 1 << 24
    /// Logical blocks per token the copy manager prefers (VPD 0x8F OPTIMAL TRANSFER COUNT).
    public var optimalTransferCount: UInt64 = 1 << 15
    /// Block device range descriptors per command.
    public var maximumRangeDescriptors: Int = 64
    /// The ROD type when POPULATE TOKEN's RTV is 0.
    public var defaultRODType: RODType = .pointInTimePersistent
    /// Seconds a terminal token keeps answering with its own ASCQ before it is forgotten.
    public var tombstoneLifetime: Int64 = 300
    /// Accept range descriptors laid out one byte early, as ddpt 0.97 (Debian 12) sends them,
    /// when — and only when — the list read as the standard lays it out names LBAs past the
    /// end of the LU and the one-byte-early reading is consistent (see `ddptRanges`).
    public var acceptDDPTRangeLayout = false

    public init() {}
}

/// A block device range descriptor (SBC-4 §5.9.3).
struct BlockRange: Sendable, Equatable {
    var lba: UInt64
    var blocks: UInt64
    /// Offset of the descriptor in the parameter list.
    var offset: Int
}

/// A decoded POPULATE TOKEN parameter list.
struct PopulateTokenList: Sendable, Equatable {
    var immediate: Bool
    /// nil: RTV = 0.
    var rodType: RODType?
    var inactivityTimeout: UInt32
    var ranges: [BlockRange]
}

/// A decoded WRITE USING TOKEN parameter list.
struct WriteUsingTokenList: Sendable, Equatable {
    var immediate: Bool
    var deleteToken: Bool
    var offsetIntoROD: UInt64
    var token: [UInt8]
    var ranges: [BlockRange]
}

enum TokenParameterLists {
    /// The range descriptors at `start`, `length` bytes (a multiple of 16, not zero).
    static func ranges(_ list: [UInt8], start: Int, lengthField: Int, limits: RODTokenLimits) throws(CopyError) -> [BlockRange] {
        let length = Int(list.be16(lengthField))
        guard length > 0, length % 16 == 0 else { throw .invalidField(byte: lengthField, bit: nil) }
        guard start + length <= list.count else { throw .parameterListLength }
        guard length / 16 <= limits.maximumRangeDescriptors else { throw .tooManySegments(byte: lengthField) }
        return stride(from: start, to: start + length, by: 16).map { offset in
            BlockRange(lba: list.be64(offset), blocks: UInt64(list.be32(offset + 8)), offset: offset)
        }
    }

    /// The data length field (bytes 0–1) counts the bytes after it.
    static func checkDataLength(_ list: [UInt8], minimum: Int) throws(CopyError) {
        guard list.count >= minimum else { throw .parameterListLength }
        guard Int(list.be16(0)) + 2 <= list.count else { throw .parameterListLength }
    }

    static func populateToken(_ list: [UInt8], limits: RODTokenLimits) throws(CopyError) -> PopulateTokenList {
        try checkDataLength(list, minimum: 16)
        let flags = list[2]
        let rtv = flags & 0x02 != 0
        var type: RODType?
        if rtv {
            guard let requested = RODType(rawValue: list.be32(8)), RODType.creatable.contains(requested) else {
                throw .invalidField(byte: 8, bit: nil)
            }
            type = requested
        }
        let timeout = list.be32(4)
        guard timeout <= limits.maximumInactivityTimeout else { throw .invalidField(byte: 4, bit: nil) }
        let ranges = try ranges(list, start: 16, lengthField: 14, limits: limits)
        return PopulateTokenList(immediate: flags & 0x01 != 0, rodType: type, inactivityTimeout: timeout, ranges: ranges)
    }

    static func writeUsingToken(_ list: [UInt8], limits: RODTokenLimits) throws(CopyError) -> WriteUsingTokenList {
        try checkDataLength(list, minimum: 536)
        let flags = list[2]
        let ranges = try ranges(list, start: 536, lengthField: 534, limits: limits)
        return WriteUsingTokenList(immediate: flags & 0x01 != 0, deleteToken: flags & 0x02 != 0,
                                   offsetIntoROD: list.be64(8), token: Array(list[16..<528]), ranges: ranges)
    }

    /// The range descriptors as ddpt 0.97 writes them: each one byte before where SBC-4 puts
    /// it, the first one's most significant LBA byte overwritten by the low byte of the range
    /// descriptor length (which ddpt fills in last). nil unless every byte that layout leaves
    /// zero is zero (the reserved bytes of each descriptor, and the byte after the last one).
    static func ddptRanges(_ list: [UInt8], start: Int, count: Int) -> [BlockRange]? {
        guard count > 0, start - 1 + 16 * count + 1 <= list.count else { return nil }
        var ranges: [BlockRange] = []
        for i in 0..<count {
            let at = start - 1 + 16 * i
            guard list[(at + 12)..<(at + 16)].allSatisfy({ $0 == 0 }) else { return nil }
            var lba = list.be64(at)
            if i == 0 { lba &= 0x00FF_FFFF_FFFF_FFFF }
            ranges.append(BlockRange(lba: lba, blocks: UInt64(list.be32(at + 8)), offset: at + 1))
        }
        guard list[start + 16 * count - 1] == 0 else { return nil }
        return ranges
    }

    /// `check` of the standard layout; if that names LBAs past the end of the LU and
    /// `acceptDDPT` is set, `check` of ddpt 0.97's layout instead. Returns the byte ranges and
    /// whether ddpt's layout was used.
    static func checkRanges(_ list: [UInt8], _ ranges: [BlockRange], start: Int, unit: CopyUnit,
                            limits: RODTokenLimits) throws(CopyError) -> ([ByteRange], Bool) {
        do {
            return (try check(ranges, unit: unit, maximumBlocks: limits.maximumTokenTransferSize), false)
        } catch {
            guard case .lbaOutOfRange = error, limits.acceptDDPTRangeLayout,
                  let shifted = ddptRanges(list, start: start, count: ranges.count),
                  let accepted = try? check(shifted, unit: unit, maximumBlocks: limits.maximumTokenTransferSize) else {
                throw error
            }
            return (accepted, true)
        }
    }

    /// Ranges inside the logical unit (21/00, INFORMATION = the first LBA outside), not
    /// overlapping one another (26/00 at the later descriptor), not above `maximumBlocks`
    /// in all (26/00 at the NUMBER OF LOGICAL BLOCKS that crosses it; 0: no limit).
    static func check(_ ranges: [BlockRange], unit: CopyUnit, maximumBlocks: UInt64) throws(CopyError) -> [ByteRange] {
        var total: UInt64 = 0
        var accepted: [BlockRange] = []
        for range in ranges {
            let (end, overflow) = range.lba.addingReportingOverflow(range.blocks)
            guard !overflow, end <= unit.blockCount else {
                throw .lbaOutOfRange(lba: range.lba < unit.blockCount ? unit.blockCount : range.lba)
            }
            if range.blocks > 0, accepted.contains(where: { $0.blocks > 0 && $0.lba < end && range.lba < $0.lba + $0.blocks }) {
                throw .invalidField(byte: range.offset, bit: nil)
            }
            total += range.blocks
            if maximumBlocks > 0 && total > maximumBlocks { throw .invalidField(byte: range.offset + 8, bit: nil) }
            accepted.append(range)
        }
        let blockSize = UInt64(unit.blockSize)
        return accepted.filter { $0.blocks > 0 }.map { ByteRange(offset: $0.lba * blockSize, length: $0.blocks * blockSize) }
    }
}

extension CopyManager {
    private func key(_ nexus: ITNexus, _ unit: CopyUnitID, _ listID: UInt32) -> CopyListKey {
        CopyListKey(initiatorPort: nexus.initiatorPortName, targetPort: nexus.targetPortName, unit: unit, listID: listID)
    }

    /// Records the end of a token operation; `bytes` nil: what its progress reports said.
    private func finish(_ key: CopyListKey, _ outcome: CopyOutcome, bytes: UInt64?) {
        let now = self.clock()
        let ended = self.table.withLock { table -> (CopyCommandKind, UInt64, NIODeadline?)? in
            guard let operation = table.operations[key], case .running = operation.state else { return nil }
            let done = bytes ?? operation.bytesTransferred
            table.finish(key, outcome, segmentsProcessed: 0, bytesTransferred: done, now: now)
            return (operation.kind, done, operation.started)
        }
        if let (kind, done, started) = ended { self.report(kind, key, outcome: outcome, bytes: done, started: started) }
    }

    // MARK: POPULATE TOKEN

    /// Starts tracking a token command under its list identifier (00/16 if one runs), then
    /// runs `body`; an error it throws is held for RRTI / RECEIVE COPY STATUS as well as thrown.
    private func tracked(_ kind: CopyCommandKind, _ parameterList: [UInt8], listID: UInt32, unit unitID: CopyUnitID,
                         nexus: ITNexus, _ body: (CopyListKey) throws(CopyError) -> Void) throws(CopyError) {
        let key = self.key(nexus, unitID, listID)
        let blockSize = self.registry.unit(unitID)?.blockSize
        let immediate = parameterList.count > 2 && parameterList[2] & 0x01 != 0
        _ = try self.table.withLock { table throws(CopyError) in
            try table.begin(key, kind: kind, usage: .hold, now: self.clock()) { operation in
                operation.blockSize = blockSize
                operation.background = immediate
            }
        }
        do {
            try body(key)
        } catch {
            // (A copy that failed has recorded its own end already; this is then a no-op.)
            self.finish(key, error.sense.map { .failed($0) } ?? .aborted, bytes: nil)
            throw error
        }
    }

    /// POPULATE TOKEN received by `unit` from `nexus` with LIST IDENTIFIER `listID`.
    public func populateToken(_ parameterList: [UInt8], listID: UInt32, unit unitID: CopyUnitID,
                              nexus: ITNexus) throws(CopyError) {
        guard !parameterList.isEmpty else { return }
        try self.tracked(.populateToken, parameterList, listID: listID, unit: unitID, nexus: nexus) { key throws(CopyError) in
            try self.populate(parameterList, key: key, unit: unitID, nexus: nexus)
        }
    }

    private func populate(_ parameterList: [UInt8], key: CopyListKey, unit unitID: CopyUnitID,
                          nexus: ITNexus) throws(CopyError) {
        let limits = self.tokenLimits
        let list = try TokenParameterLists.populateToken(parameterList, limits: limits)
        guard let unit = self.registry.unit(unitID) else { throw .token(.causeNotReportable) }
        let (ranges, ddptLayout) = try TokenParameterLists.checkRanges(parameterList, list.ranges, start: 16, unit: unit,
                                                                       limits: limits)
        let timeout = list.inactivityTimeout == 0 ? limits.defaultInactivityTimeout : list.inactivityTimeout
        let created = try self.tokens.create(
            type: list.rodType ?? limits.defaultRODType, source: unit, ranges: ranges,
            inactivityTimeout: .seconds(Int64(timeout)),
            tombstoneLifetime: .seconds(limits.tombstoneLifetime),
            owner: nexus.initiatorPortName, createdBy: unitID.targetName,
            maximumTokens: limits.maximumTokens)
        let bytes = ranges.reduce(UInt64(0)) { $0 + $1.length }
        let populate: @Sendable () -> Void = { [tokens = self.tokens] in
            tokens.apply(.populated(now: self.clock()), to: created.identifier,
                         cause: ddptLayout ? "POPULATE TOKEN (ranges laid out as ddpt 0.97 does)" : "POPULATE TOKEN")
            self.table.withLock { $0.attachToken(key, created.bytes) }
            self.finish(key, .completed, bytes: bytes)
        }
        if list.immediate {
            self.background(populate)
        } else {
            populate()
        }
    }

    // MARK: WRITE USING TOKEN

    /// WRITE USING TOKEN received by `unit` from `nexus` with LIST IDENTIFIER `listID`.
    /// Blocks until the copy ends unless IMMED is set.
    public func writeUsingToken(_ parameterList: [UInt8], listID: UInt32, unit unitID: CopyUnitID,
                                nexus: ITNexus) throws(CopyError) {
        guard !parameterList.isEmpty else { return }
        try self.tracked(.writeUsingToken, parameterList, listID: listID, unit: unitID, nexus: nexus) { key throws(CopyError) in
            try self.write(parameterList, key: key, unit: unitID, nexus: nexus)
        }
    }

    private func write(_ parameterList: [UInt8], key: CopyListKey, unit unitID: CopyUnitID,
                       nexus: ITNexus) throws(CopyError) {
        let limits = self.tokenLimits
        let list = try TokenParameterLists.writeUsingToken(parameterList, limits: limits)
        guard let destination = self.registry.unit(unitID) else { throw .token(.causeNotReportable) }
        let (ranges, _) = try TokenParameterLists.checkRanges(parameterList, list.ranges, start: 536, unit: destination,
                                                              limits: limits)
        if destination.isReadOnly { throw .medium(SenseData(key: .dataProtect, code: .writeProtected)) }
        let use: RODTokenUse?
        switch self.tokens.beginUse(list.token) {
        case .failure(let error): throw .token(error)
        case .success(let granted): use = granted
        }
        // A token whose source this initiator could not address itself is, to it, unknown.
        if let use, !use.source.isAccessible(to: nexus) {
            self.tokens.endUse(use.identifier, deleteToken: false)
            throw .token(.tokenUnknown)
        }
        let destinationBytes = ranges.reduce(UInt64(0)) { $0 + $1.length }
        var available = destinationBytes
        if let use {
            let (start, overflow) = list.offsetIntoROD.multipliedReportingOverflow(by: UInt64(destination.blockSize))
            guard !overflow, start < use.bytesRepresented else {
                self.tokens.endUse(use.identifier, deleteToken: false)
                throw .invalidField(byte: 8, bit: nil)
            }
            available = use.bytesRepresented - start
        }
        let transfer = min(destinationBytes, available)
        let stop = StopFlag()
        let number = self.nextCopyNumber.wrappingAdd(1, ordering: .relaxed).newValue
        self.running.withLock {
            $0[number] = RunningCopy(initiatorPort: nexus.initiatorPortName, targetPort: nexus.targetPortName,
                                     unit: unitID, stop: stop)
        }
        let partial = transfer < destinationBytes
        let rodStart = list.offsetIntoROD * UInt64(destination.blockSize)
        // Returns the error that ended the copy, nil on success.
        let work: @Sendable () -> CopyError? = {
            defer { _ = self.running.withLock { $0.removeValue(forKey: number) } }
            let shouldStop: @Sendable () -> Bool = {
                stop.raised.load(ordering: .relaxed) || self.table.withLock { $0.isAbortRequested(key) }
            }
            let progress: @Sendable (UInt64) -> Void = { total in
                self.table.withLock { $0.progress(key, segmentsProcessed: 0, bytesTransferred: total) }
            }
            do throws(CopyError) {
                if let use {
                    try self.copyFromToken(use, rodStart: rodStart, length: transfer, to: destination, ranges: ranges,
                                           shouldStop: shouldStop, progress: progress)
                } else {
                    try self.writeZeros(to: destination, ranges: ranges, shouldStop: shouldStop, progress: progress)
                }
            } catch {
                if let use { self.tokens.endUse(use.identifier, deleteToken: false) }
                destination.record { $0.failedOperations += 1 }
                self.finish(key, error.sense.map { .failed($0) } ?? .aborted, bytes: nil)
                return error
            }
            if let use {
                self.tokens.endUse(use.identifier, deleteToken: list.deleteToken)
                use.source.record { $0.bytesRead += transfer }
            }
            destination.record {
                $0.operations += 1
                $0.bytesWritten += transfer
            }
            self.finish(key, partial ? .completedWithPartialTokenUsage : .completed, bytes: transfer)
            return nil
        }
        if list.immediate {
            self.background { _ = work() }
        } else if let error = work() {
            throw error
        }
    }

    /// Copies `length` bytes of the token's ROD from `rodStart` into the destination ranges.
    private func copyFromToken(_ use: RODTokenUse, rodStart: UInt64, length: UInt64, to destination: CopyUnit,
                               ranges: [ByteRange], shouldStop: @escaping @Sendable () -> Bool,
                               progress: @escaping @Sendable (UInt64) -> Void) throws(CopyError) {
        var done: UInt64 = 0
        let durable = !destination.writeCacheEnabled
        // One staging buffer for the whole copy (persistent tokens read through it).
        let staging = UnsafeMutableRawBufferPointer.allocate(
            byteCount: use.type == .pointInTimePersistent ? self.mover.chunkSize : 0, alignment: 4096)
        defer { staging.deallocate() }
        func check() throws(CopyError) {
            if let error = self.tokens.useError(use.identifier) { throw .tokenInvalidatedDuringCopy(error) }
        }
        for range in ranges {
            guard done < length else { break }
            var written: UInt64 = 0
            let count = min(range.length, length - done)
            while written < count {
                let rodOffset = rodStart + done + written
                if use.type == .pointInTimePersistent {
                    // Through the token store, which serves preserved bytes from the token's own storage.
                    let chunk = min(count - written, UInt64(self.mover.chunkSize))
                    if shouldStop() { throw .aborted(segment: 0) }
                    let buffer = UnsafeMutableRawBufferPointer(rebasing: staging[0..<Int(chunk)])
                    do throws(TokenReadError) {
                        try self.tokens.read(use, at: rodOffset, into: buffer)
                    } catch {
                        switch error {
                        case .token(let tokenError): throw .tokenInvalidatedDuringCopy(tokenError)
                        case .storage(let storeError): throw .medium(SCSIError(mapping: storeError).sense!)
                        }
                    }
                    do {
                        try destination.store.write(UnsafeRawBufferPointer(buffer), at: range.offset + written, durable: false)
                    } catch {
                        throw .medium(SCSIError(mapping: error).sense!)
                    }
                    destination.noteWritten(at: range.offset + written, length: chunk)
                    written += chunk
                    progress(done + written)
                } else {
                    // The source as it is now: one source piece at a time, inside the storage when it can.
                    guard let piece = RODTokenStore.overlapsROD(
                        use.ranges, rodOffset: rodOffset, end: rodOffset + (count - written)).first else {
                        throw .tokenInvalidatedDuringCopy(.causeNotReportable)
                    }
                    let (sourceOffset, pieceLength) = (piece.1, piece.2)
                    let base = done + written
                    let moved: UInt64
                    do throws(MoveError) {
                        moved = try self.mover.move(
                            from: use.source.store, at: sourceOffset, to: destination.store, at: range.offset + written,
                            length: pieceLength, durable: false,
                            shouldStop: { shouldStop() || self.tokens.useError(use.identifier) != nil },
                            progress: { progress(base + $0) })
                    } catch {
                        try check()
                        switch error {
                        case .stopped: throw .aborted(segment: 0)
                        case .readFailed(let e, _), .writeFailed(let e, _): throw .medium(SCSIError(mapping: e).sense!)
                        }
                    }
                    try check()
                    destination.noteWritten(at: range.offset + written, length: moved)
                    written += moved
                }
            }
            done += written
        }
        if durable {
            do { try destination.store.flush() } catch { throw .medium(SCSIError(mapping: error).sense!) }
        }
    }

    /// The block device zero ROD token: zeros into every range (deallocated on a thin LU).
    private func writeZeros(to destination: CopyUnit, ranges: [ByteRange], shouldStop: @Sendable () -> Bool,
                            progress: @Sendable (UInt64) -> Void) throws(CopyError) {
        var done: UInt64 = 0
        let chunk = UInt64(self.mover.chunkSize)
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunk), alignment: 4096)
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        defer { zeros.deallocate() }
        let deallocate = destination.isThinProvisioned && destination.store.supportsDeallocation
        do {
            for range in ranges {
                var written: UInt64 = 0
                while written < range.length {
                    if shouldStop() { throw CopyError.aborted(segment: 0) }
                    let count = min(range.length - written, deallocate ? chunk * 64 : chunk)
                    if deallocate {
                        try destination.store.deallocate(at: range.offset + written, length: count)
                        destination.noteDeallocated(at: range.offset + written, length: count)
                    } else {
                        try destination.store.write(UnsafeRawBufferPointer(rebasing: zeros[0..<Int(count)]),
                                                    at: range.offset + written, durable: false)
                        destination.noteWritten(at: range.offset + written, length: count)
                    }
                    written += count
                    progress(done + written)
                }
                done += written
            }
            if !destination.writeCacheEnabled { try destination.store.flush() }
        } catch let error as CopyError {
            throw error
        } catch let error as BlockStoreError {
            throw .medium(SCSIError(mapping: error).sense!)
        } catch {
            throw .medium(SenseData(key: .hardwareError, code: .internalTargetFailure))
        }
    }

    // MARK: RECEIVE ROD TOKEN INFORMATION, REPORT ALL ROD TOKENS

    /// RECEIVE ROD TOKEN INFORMATION for list `listID` of (nexus, unit). A finished
    /// operation's information is freed once returned.
    public func rodTokenInformation(listID: UInt32, unit: CopyUnitID, nexus: ITNexus) throws(CopyError) -> [UInt8] {
        let key = self.key(nexus, unit, listID)
        guard let operation = self.table.withLock({ $0.read(key, .statusLID4, now: self.clock()) }) else {
            throw .invalidFieldInCDB(byte: 2, bit: nil)
        }
        return Self.rodTokenInformation(operation)
    }

    /// REPORT ALL ROD TOKENS: the first 96 bytes (the ROD management token) of every live
    /// token whose source is `unit`.
    public func reportAllRODTokens(unit: CopyUnitID) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 8)
        for token in self.tokens.liveTokenBytes(source: unit) { data += token.prefix(96) }
        data.put32(UInt32(data.count - 4), at: 0)
        return data
    }

    // MARK: VPD 0x8F token descriptors

    /// Block Device ROD Limits (0000h), ROD Token Features (0106h), Supported ROD Types (0108h).
    func tokenDescriptors(blockSize: Int) -> [UInt8] {
        let limits = self.tokenLimits
        var rodLimits = [UInt8](repeating: 0, count: 36)
        rodLimits.put16(0x0000, at: 0)
        rodLimits.put16(0x0020, at: 2)
        rodLimits.put16(UInt16(clamping: limits.maximumRangeDescriptors), at: 10)
        rodLimits.put32(limits.maximumInactivityTimeout, at: 12)
        rodLimits.put32(limits.defaultInactivityTimeout, at: 16)
        rodLimits.put64(limits.maximumTokenTransferSize, at: 20)
        rodLimits.put64(limits.optimalTransferCount, at: 28)

        var features = [UInt8](repeating: 0, count: 96)
        features.put16(0x0106, at: 0)
        features.put16(92, at: 2)
        features[4] = 0x00  // REMOTE TOKENS: none (tokens of this process only)
        features.put32(1, at: 16)  // MINIMUM TOKEN LIFETIME, s
        features.put32(limits.maximumInactivityTimeout, at: 20)  // MAXIMUM TOKEN LIFETIME (while idle)
        features.put32(limits.maximumInactivityTimeout, at: 24)  // MAXIMUM TOKEN INACTIVITY TIMEOUT
        features.put16(48, at: 46)  // ROD DEVICE TYPE SPECIFIC FEATURES DESCRIPTORS LENGTH
        // Block device descriptor.
        features[48] = 0x00
        features.put16(0x002C, at: 50)
        features.put16(1, at: 54)  // OPTIMAL BLOCK ROD LENGTH GRANULARITY (blocks)
        let maximumBytes = limits.maximumTokenTransferSize == 0 ? UInt64.max
            : limits.maximumTokenTransferSize.multipliedReportingOverflow(by: UInt64(blockSize)).partialValue
        features.put64(maximumBytes, at: 56)  // MAXIMUM BYTES IN BLOCK ROD
        let optimalBytes = limits.optimalTransferCount * UInt64(blockSize)
        features.put64(optimalBytes, at: 64)  // OPTIMAL BYTES IN BLOCK ROD TRANSFER
        features.put64(optimalBytes, at: 72)  // OPTIMAL BYTES TO TOKEN PER SEGMENT
        features.put64(optimalBytes, at: 80)  // OPTIMAL BYTES FROM TOKEN PER SEGMENT

        let types: [(RODType, UInt8)] = RODType.allCases.map { ($0, $0 == .blockDeviceZero ? 0x02 : 0x03) }
        var supported = [UInt8](repeating: 0, count: 8)
        supported.put16(0x0108, at: 0)
        supported.put16(UInt16(4 + 64 * types.count), at: 2)
        supported.put16(UInt16(64 * types.count), at: 6)
        for (type, flags) in types {
            var entry = [UInt8](repeating: 0, count: 64)
            entry.put32(type.rawValue, at: 0)
            entry[4] = flags  // TOKEN_IN 02h, TOKEN_OUT 01h
            entry.put16(type == limits.defaultRODType ? 1 : 0, at: 6)  // PREFERENCE INDICATION
            supported += entry
        }
        return rodLimits + features + supported
    }
}
