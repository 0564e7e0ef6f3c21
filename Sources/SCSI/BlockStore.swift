//
// The storage beneath a logical unit. A block store knows bytes and offsets only: it
// never sees a CDB, never builds sense data. The SCSI layer maps its errors to sense
// in one place.
//

/// Errors a block store reports. The device model maps each to sense data.
public enum BlockStoreError: Error, Sendable, Equatable {
    /// The medium could not be read (maps to MEDIUM ERROR, UNRECOVERED READ ERROR).
    case readFailed(errno: Int32)
    /// The medium could not be written (maps to MEDIUM ERROR, WRITE ERROR).
    case writeFailed(errno: Int32)
    /// No space left on the backing file system (maps to DATA PROTECT / SPACE ALLOCATION FAILED
    /// WRITE PROTECT, 07/27/07).
    case noSpace
    /// A flush failed (maps to MEDIUM ERROR, WRITE ERROR).
    case flushFailed(errno: Int32)
    /// Access past the end of the store (a bug in the caller: LBA checks come first).
    case outOfRange
}

/// Byte-addressed storage with explicit durability.
///
/// All methods may block and are called from a thread pool, never an event loop.
/// Implementations are thread-safe for concurrent calls on disjoint or overlapping ranges
/// (overlapping writes land in some order, as on a disk).
public protocol BlockStore: AnyObject, Sendable {
    /// Size in bytes.
    var byteCount: UInt64 { get }
    /// Fill `buffer` completely with the bytes at `offset`. Holes read as zeros.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError)
    /// Write `bytes` at `offset`. When `durable` is true the data is on stable storage
    /// before the call returns (FUA, write-through).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, durable: Bool) throws(BlockStoreError)
    /// Make every completed write durable (SYNCHRONIZE CACHE).
    func flush() throws(BlockStoreError)
    /// Deallocate a range so that it reads as zeros (UNMAP, WRITE SAME with UNMAP). An
    /// implementation that cannot deallocate writes zeros.
    func deallocate(at offset: UInt64, length: UInt64) throws(BlockStoreError)
    /// True when `deallocate` really releases space (thin provisioning).
    var supportsDeallocation: Bool { get }
    /// Provisioning status for GET LBA STATUS (added; has a default implementation below).
    func provisioningStatus(at offset: UInt64, length: UInt64) -> (mapped: Bool, length: UInt64)
    /// Copies `length` bytes from this store at `sourceOffset` to `destination` at
    /// `destinationOffset` without passing them through a caller's buffer (copy_file_range,
    /// reflinks), when the two stores can. Returns the bytes copied: fewer than `length` (0 by
    /// default) means the caller copies the rest itself through a buffer.
    func copyRange(to destination: any BlockStore, sourceOffset: UInt64, destinationOffset: UInt64,
                   length: UInt64) throws(BlockStoreError) -> UInt64
    /// Fill `buffer` only if that needs no waiting for storage (the bytes are in memory, e.g.
    /// in the page cache): returns false, having read nothing useful, when `read` would have
    /// to wait. Safe to call on an event loop. The default always answers false.
    func readWithoutWaiting(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool
    /// The logical unit was removed: make every completed write durable, then let go of the
    /// storage (the backing file) even though calls may still be running or arrive late; from
    /// then on every call fails. The default flushes.
    func detach() throws(BlockStoreError)
}

extension BlockStore {
    public func detach() throws(BlockStoreError) {
        try self.flush()
    }

    public func readWithoutWaiting(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool {
        false
    }

    /// Provisioning status of the bytes starting at `offset` (GET LBA STATUS): whether they
    /// are mapped, and how many bytes from `offset` (1…`length`) share that status.
    /// The default reports everything as mapped.
    public func provisioningStatus(at offset: UInt64, length: UInt64) -> (mapped: Bool, length: UInt64) {
        (true, length)
    }

    /// By default nothing is copied inside the storage.
    public func copyRange(to destination: any BlockStore, sourceOffset: UInt64, destinationOffset: UInt64,
                          length: UInt64) throws(BlockStoreError) -> UInt64 {
        0
    }
}
