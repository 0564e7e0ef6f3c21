//
// An in-memory block store for tests and scratch LUNs. It tracks which 4 KiB chunks were
// deallocated so GET LBA STATUS has something to report.
//
import SCSI
import Synchronization

public final class MemoryBlockStore: BlockStore {
    public let byteCount: UInt64
    public let supportsDeallocation: Bool
    /// Granularity of the mapped/deallocated bookkeeping.
    public static let chunkSize = 4096

    private struct Storage {
        var bytes: [UInt8]
        /// One flag per chunk: true when the chunk has been written since it was last deallocated.
        var mapped: [Bool]
    }

    /// The bytes behind a pthread mutex (`LockedValue`), not a `Synchronization.Mutex`: under
    /// ThreadSanitizer on Linux the latter's lock is not seen, and a READ and a COMPARE AND
    /// WRITE on this store, each inside the lock, were reported as a race.
    private let storage: LockedValue<Storage>
    /// Calls to `flush()` and durable writes, for tests.
    private let flushCounter = Atomic<Int>(0)

    public init(byteCount: UInt64, supportsDeallocation: Bool = true) {
        self.byteCount = byteCount
        self.supportsDeallocation = supportsDeallocation
        let chunks = Int((byteCount + UInt64(Self.chunkSize) - 1) / UInt64(Self.chunkSize))
        self.storage = LockedValue(Storage(bytes: [UInt8](repeating: 0, count: Int(byteCount)),
                                     mapped: [Bool](repeating: false, count: chunks)))
    }

    public var flushCount: Int { self.flushCounter.load(ordering: .relaxed) }

    private func checkBounds(_ offset: UInt64, _ count: UInt64) throws(BlockStoreError) {
        let (end, overflow) = offset.addingReportingOverflow(count)
        if overflow || end > self.byteCount { throw BlockStoreError.outOfRange }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        try self.checkBounds(offset, UInt64(buffer.count))
        guard buffer.count > 0 else { return }
        self.storage.withLock { storage in
            storage.bytes.withUnsafeBytes { source in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[Int(offset)..<(Int(offset) + buffer.count)]))
            }
        }
    }

    /// Memory never waits for storage.
    public func readWithoutWaiting(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool {
        try self.read(into: buffer, at: offset)
        return true
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, durable: Bool) throws(BlockStoreError) {
        try self.checkBounds(offset, UInt64(bytes.count))
        guard bytes.count > 0 else { return }
        self.storage.withLock { storage in
            storage.bytes.withUnsafeMutableBytes { target in
                UnsafeMutableRawBufferPointer(rebasing: target[Int(offset)..<(Int(offset) + bytes.count)])
                    .copyMemory(from: bytes)
            }
            let first = Int(offset) / Self.chunkSize
            let last = (Int(offset) + bytes.count - 1) / Self.chunkSize
            for chunk in first...last { storage.mapped[chunk] = true }
        }
        if durable { self.flushCounter.add(1, ordering: .relaxed) }
    }

    public func flush() throws(BlockStoreError) {
        self.flushCounter.add(1, ordering: .relaxed)
    }

    public func deallocate(at offset: UInt64, length: UInt64) throws(BlockStoreError) {
        try self.checkBounds(offset, length)
        guard length > 0 else { return }
        self.storage.withLock { storage in
            let start = Int(offset)
            let end = start + Int(length)
            for index in start..<end { storage.bytes[index] = 0 }
            guard self.supportsDeallocation else { return }
            // Only chunks wholly inside the range become unmapped.
            let firstWhole = (start + Self.chunkSize - 1) / Self.chunkSize
            let endWhole = end == Int(self.byteCount) ? storage.mapped.count : end / Self.chunkSize
            if firstWhole < endWhole {
                for chunk in firstWhole..<endWhole { storage.mapped[chunk] = false }
            }
        }
    }

    public func provisioningStatus(at offset: UInt64, length: UInt64) -> (mapped: Bool, length: UInt64) {
        guard length > 0, offset < self.byteCount else { return (true, length) }
        return self.storage.withLock { storage in
            let chunk = Int(offset) / Self.chunkSize
            let status = storage.mapped[chunk]
            var next = chunk + 1
            while next < storage.mapped.count && storage.mapped[next] == status { next += 1 }
            let extent = UInt64(next * Self.chunkSize) - offset
            return (status, min(extent, length))
        }
    }

    /// A copy of the bytes (tests).
    public func snapshot(at offset: UInt64 = 0, count: Int? = nil) -> [UInt8] {
        self.storage.withLock { storage in
            let start = Int(offset)
            let end = count.map { start + $0 } ?? storage.bytes.count
            return Array(storage.bytes[start..<end])
        }
    }
}
