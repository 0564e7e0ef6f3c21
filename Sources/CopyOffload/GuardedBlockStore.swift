//
// The block store of a logical unit as every writer of the process sees it: the device's
// commands (WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE, WRITE STREAM, SANITIZE, ...), the
// EXTENDED COPY mover and WRITE USING TOKEN all write through it, so the ROD tokens whose
// source is this logical unit hear of every change before it happens (see `RODTokenStore`).
// Reads pass straight through. With no point-in-time token on the logical unit, a write
// costs one atomic load more than the store beneath.
//
import SCSI

public final class GuardedBlockStore: BlockStore {
    public let base: any BlockStore
    public let unit: CopyUnitID
    let tokens: RODTokenStore
    let watch: UnitWatch

    public init(_ base: any BlockStore, unit: CopyUnitID, tokens: RODTokenStore) {
        self.base = base
        self.unit = unit
        self.tokens = tokens
        self.watch = tokens.watch(unit)
    }

    @inline(__always)
    func willModify(_ offset: UInt64, _ length: UInt64, _ cause: String) {
        guard self.watch.watchers.load(ordering: .sequentiallyConsistent) > 0 else { return }
        self.tokens.sourceWillChange(self.unit, watch: self.watch, offset: offset, length: length, cause: cause)
    }

    public var byteCount: UInt64 { self.base.byteCount }
    public var supportsDeallocation: Bool { self.base.supportsDeallocation }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        try self.base.read(into: buffer, at: offset)
    }

    public func readWithoutWaiting(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool {
        try self.base.readWithoutWaiting(into: buffer, at: offset)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, durable: Bool) throws(BlockStoreError) {
        self.willModify(offset, UInt64(bytes.count), "write")
        try self.base.write(bytes, at: offset, durable: durable)
    }

    public func flush() throws(BlockStoreError) {
        try self.base.flush()
    }

    public func detach() throws(BlockStoreError) {
        try self.base.detach()
    }

    public func deallocate(at offset: UInt64, length: UInt64) throws(BlockStoreError) {
        self.willModify(offset, length, "deallocation")
        try self.base.deallocate(at: offset, length: length)
    }

    public func provisioningStatus(at offset: UInt64, length: UInt64) -> (mapped: Bool, length: UInt64) {
        self.base.provisioningStatus(at: offset, length: length)
    }

    public func copyRange(to destination: any BlockStore, sourceOffset: UInt64, destinationOffset: UInt64,
                          length: UInt64) throws(BlockStoreError) -> UInt64 {
        if let guarded = destination as? GuardedBlockStore {
            guarded.willModify(destinationOffset, length, "copy")
            return try self.base.copyRange(to: guarded.base, sourceOffset: sourceOffset,
                                           destinationOffset: destinationOffset, length: length)
        }
        return try self.base.copyRange(to: destination, sourceOffset: sourceOffset,
                                       destinationOffset: destinationOffset, length: length)
    }
}
