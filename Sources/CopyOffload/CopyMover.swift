//
// Moves bytes between block stores in bounded chunks.
//
// - Two file-backed stores: copy_file_range (reflinks where the file system can); the
//   kernel's refusal (another file system, overlapping ranges of one file) falls back to
//   the buffer path for the rest.
// - Otherwise: read into a reusable buffer of `chunkSize` bytes, write it out. Buffers come
//   from a small pool, so memory is bounded by (concurrent copies × chunk size) and steady
//   copying allocates nothing.
// - Between chunks `shouldStop` is asked: COPY OPERATION ABORT and nexus loss take effect
//   there. Overlapping ranges of one store are copied back to front when the destination
//   lies after the source, so the result is what a copy through an unbounded buffer gives.
// Every method blocks and runs on a thread pool.
//
import BlockStores
import SCSI

public enum MoveError: Error, Sendable, Equatable {
    case readFailed(BlockStoreError, moved: UInt64)
    case writeFailed(BlockStoreError, moved: UInt64)
    case stopped(moved: UInt64)
}

final class ChunkBuffer: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer

    init(size: Int) {
        self.bytes = .allocate(byteCount: size, alignment: 4096)
    }

    deinit { self.bytes.deallocate() }
}

public final class CopyMover: Sendable {
    public let chunkSize: Int
    /// copy_file_range requests are this large (still bounded, so aborts stay prompt).
    public let kernelChunkSize: UInt64
    private let pool = LockedValue<[ChunkBuffer]>([])
    private let pooledBuffers: Int

    public init(chunkSize: Int = 1 << 20, kernelChunkSize: UInt64 = 64 << 20, pooledBuffers: Int = 4) {
        self.chunkSize = chunkSize
        self.kernelChunkSize = max(UInt64(chunkSize), kernelChunkSize)
        self.pooledBuffers = pooledBuffers
    }

    private func takeBuffer() -> ChunkBuffer {
        self.pool.withLock { $0.popLast() } ?? ChunkBuffer(size: self.chunkSize)
    }

    private func giveBack(_ buffer: ChunkBuffer) {
        self.pool.withLock { pool in
            if pool.count < self.pooledBuffers { pool.append(buffer) }
        }
    }

    /// Copies `length` bytes. `progress` is told the running total after each chunk.
    @discardableResult
    public func move(from source: any BlockStore, at sourceOffset: UInt64, to destination: any BlockStore,
                     at destinationOffset: UInt64, length: UInt64, durable: Bool = false,
                     shouldStop: () -> Bool = { false },
                     progress: (UInt64) -> Void = { _ in }) throws(MoveError) -> UInt64 {
        guard length > 0 else { return 0 }
        let sameStore = source === destination
        let overlapping = sameStore && sourceOffset < destinationOffset + length && destinationOffset < sourceOffset + length
        if overlapping && sourceOffset == destinationOffset { return length }
        var moved: UInt64 = 0

        if !overlapping {
            // Inside the storage first (copy_file_range between files); a store that cannot
            // copies nothing and the buffer path below does the rest.
            while moved < length {
                // (Asked only between chunks the storage copied: a store that copies nothing
                // goes straight to the buffer path, which asks before its first chunk.)
                if moved > 0 && shouldStop() { throw .stopped(moved: moved) }
                let request = min(length - moved, self.kernelChunkSize)
                let done: UInt64
                do {
                    done = try source.copyRange(to: destination, sourceOffset: sourceOffset + moved,
                                                destinationOffset: destinationOffset + moved, length: request)
                } catch {
                    throw .writeFailed(error, moved: moved)
                }
                moved += done
                if done > 0 { progress(moved) }
                if done < request { break }
            }
            if moved == length {
                if durable { try self.flush(destination, moved: moved) }
                return moved
            }
        }

        let backwards = overlapping && destinationOffset > sourceOffset
        let buffer = self.takeBuffer()
        defer { self.giveBack(buffer) }
        while moved < length {
            if shouldStop() { throw .stopped(moved: moved) }
            let count = Int(min(length - moved, UInt64(self.chunkSize)))
            let position = backwards ? length - moved - UInt64(count) : moved
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<count])
            do {
                try source.read(into: chunk, at: sourceOffset + position)
            } catch {
                throw .readFailed(error, moved: moved)
            }
            do {
                try destination.write(UnsafeRawBufferPointer(chunk), at: destinationOffset + position, durable: false)
            } catch {
                throw .writeFailed(error, moved: moved)
            }
            moved += UInt64(count)
            progress(moved)
        }
        if durable { try self.flush(destination, moved: moved) }
        return moved
    }

    private func flush(_ store: any BlockStore, moved: UInt64) throws(MoveError) {
        do {
            try store.flush()
        } catch {
            throw .writeFailed(error, moved: moved)
        }
    }
}
