//
// A block store over a regular file (or a block device), with positional I/O.
//
// - Reads and writes are pread/pwrite loops: short transfers continue, EINTR retries.
// - Durability: `durable` writes are followed by fdatasync; in write-through mode the file
//   is opened O_DSYNC so every write is durable. `flush()` is fdatasync.
// - Deallocation punches holes (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE); where the file
//   system refuses, zeros are written instead and `supportsDeallocation` turns false.
// - Size: a missing file is created sparse with the requested size (when allowed). An
//   existing file is never truncated: a smaller one is grown (sparsely, with ftruncate) to
//   the requested size; a larger one keeps its bytes and the store exposes only the
//   requested size (`fileSize` tells the caller, so it can report it). A requested size of
//   0 means "the size of the existing file".
//
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SCSI
import Synchronization

/// Why a backing file could not be opened or sized. The description names the path and
/// the system error.
public struct FileBlockStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var operation: String
    public var errno: Int32

    public init(path: String, operation: String, errno: Int32) {
        self.path = path
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        let reason = strerror(self.errno).map { String(cString: $0) } ?? "error \(self.errno)"
        return "cannot \(self.operation) '\(self.path)': \(reason)"
    }
}

public final class FileBlockStore: BlockStore {
    public let path: String
    public let byteCount: UInt64
    /// The size of the file when it was opened (after creating or growing it).
    public let fileSize: UInt64
    public let writeThrough: Bool
    public let isReadOnly: Bool
    private let descriptor: Int32
    private let canPunchHoles: Atomic<Bool>

    private static let fallocKeepSize: Int32 = 0x01
    private static let fallocPunchHole: Int32 = 0x02
    /// glibc's fallocate(2) wrapper, looked up at run time (the Glibc module only exposes it
    /// with _GNU_SOURCE).
    private typealias FallocateFunction = @convention(c) (Int32, Int32, off_t, off_t) -> Int32
    private static let fallocateFunction: FallocateFunction? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "fallocate") else { return nil }
        return unsafeBitCast(symbol, to: FallocateFunction.self)
    }()
    /// preadv2(2), looked up at run time like fallocate; with RWF_NOWAIT it reads only what
    /// is in the page cache and fails with EAGAIN instead of waiting for the disk.
    private typealias Preadv2Function = @convention(c) (Int32, UnsafePointer<iovec>, Int32, off_t, Int32) -> Int
    private static let preadv2Function: Preadv2Function? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "preadv2") else { return nil }
        return unsafeBitCast(symbol, to: Preadv2Function.self)
    }()
    private static let rwfNoWait: Int32 = 0x08
    /// False once the file system answered RWF_NOWAIT with EOPNOTSUPP.
    private let canReadWithoutWaiting = Atomic<Bool>(true)
    /// O_PATH (Linux): a descriptor that names a file but reads, writes and syncs nothing.
    private static let openPath: Int32 = 0o10000000
    /// Set once by `detach`.
    private let detached = Atomic<Bool>(false)
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4

    private init(path: String, descriptor: Int32, byteCount: UInt64, fileSize: UInt64, writeThrough: Bool,
                 readOnly: Bool) {
        self.path = path
        self.descriptor = descriptor
        self.byteCount = byteCount
        self.fileSize = fileSize
        self.writeThrough = writeThrough
        self.isReadOnly = readOnly
        self.canPunchHoles = Atomic(!readOnly)
    }

    deinit {
        close(self.descriptor)
    }

    /// Opens (and if allowed creates) the backing file.
    /// - Parameters:
    ///   - byteCount: the size the store exposes; 0 means the existing file's size.
    ///   - createIfMissing: create a sparse file of `byteCount` bytes when there is none.
    ///   - writeThrough: open with O_DSYNC, so every write is durable when it returns.
    ///   - readOnly: open O_RDONLY (writes then fail with EBADF).
    public static func open(path: String, byteCount: UInt64, createIfMissing: Bool, writeThrough: Bool,
                            readOnly: Bool = false) throws -> FileBlockStore {
        var flags = O_CLOEXEC | (readOnly ? O_RDONLY : O_RDWR)
        if createIfMissing && !readOnly { flags |= O_CREAT }
        if writeThrough && !readOnly { flags |= O_DSYNC }
        var fd: Int32
        repeat {
            fd = Glibc.open(path, flags, 0o644)
        } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw FileBlockStoreError(path: path, operation: "open", errno: errno) }
        var success = false
        defer { if !success { close(fd) } }

        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw FileBlockStoreError(path: path, operation: "determine the size of", errno: errno) }
        var fileSize = UInt64(end)
        let exposed = byteCount == 0 ? fileSize : byteCount
        guard exposed > 0 else { throw FileBlockStoreError(path: path, operation: "use empty file", errno: EINVAL) }
        if fileSize < exposed {
            if readOnly { throw FileBlockStoreError(path: path, operation: "grow read-only file", errno: EROFS) }
            guard ftruncate(fd, off_t(exposed)) == 0 else {
                throw FileBlockStoreError(path: path, operation: "set the size of", errno: errno)
            }
            fileSize = exposed
        }
        success = true
        return FileBlockStore(path: path, descriptor: fd, byteCount: exposed, fileSize: fileSize,
                              writeThrough: writeThrough, readOnly: readOnly)
    }

    public var supportsDeallocation: Bool { self.canPunchHoles.load(ordering: .relaxed) }

    fileprivate var descriptorForCopy: Int32 { self.descriptor }

    fileprivate func checkRange(_ offset: UInt64, _ length: UInt64) throws(BlockStoreError) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        if overflow || end > self.byteCount { throw BlockStoreError.outOfRange }
    }

    private func checkBounds(_ offset: UInt64, _ count: Int) throws(BlockStoreError) {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        if overflow || end > self.byteCount { throw BlockStoreError.outOfRange }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        try self.checkBounds(offset, buffer.count)
        var done = 0
        while done < buffer.count {
            let n = pread(self.descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw BlockStoreError.readFailed(errno: errno)
            }
            if n == 0 {
                // Past the end of a file that shrank underneath us: reads as zeros.
                (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
                return
            }
            done += n
        }
    }

    public func readWithoutWaiting(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool {
        try self.checkBounds(offset, buffer.count)
        guard buffer.count > 0 else { return true }
        guard let preadv2 = Self.preadv2Function, self.canReadWithoutWaiting.load(ordering: .relaxed) else { return false }
        var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        while true {
            let n = preadv2(self.descriptor, &vector, 1, off_t(offset), Self.rwfNoWait)
            if n == buffer.count { return true }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EOPNOTSUPP || errno == ENOSYS) { self.canReadWithoutWaiting.store(false, ordering: .relaxed) }
            // EAGAIN (not all in memory), a short read, or an error `read` will report.
            return false
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64, durable: Bool) throws(BlockStoreError) {
        try self.checkBounds(offset, bytes.count)
        try self.writeAll(bytes, at: offset)
        if durable && !self.writeThrough { try self.flush() }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(self.descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == ENOSPC || code == EDQUOT { throw BlockStoreError.noSpace }
                throw BlockStoreError.writeFailed(errno: code)
            }
            if n == 0 { throw BlockStoreError.writeFailed(errno: EIO) }
            done += n
        }
    }

    public func flush() throws(BlockStoreError) {
        while fdatasync(self.descriptor) != 0 {
            if errno == EINTR { continue }
            throw BlockStoreError.flushFailed(errno: errno)
        }
    }

    /// Flushes, then points the descriptor at an O_PATH descriptor of "/" (dup2), which closes
    /// the file. A call already inside the kernel keeps its own reference and finishes against
    /// the file; every later read, write, flush or copy fails with EBADF, never succeeding
    /// somewhere else (a plain close could hand the number to another file). The number stays
    /// allocated until the store goes.
    public func detach() throws(BlockStoreError) {
        guard !self.detached.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let flushed = Result { () throws(BlockStoreError) in try self.flush() }
        let placeholder = Glibc.open("/", FileBlockStore.openPath | O_CLOEXEC)
        if placeholder >= 0 {
            _ = dup2(placeholder, self.descriptor)
            close(placeholder)
        }
        try flushed.get()
    }

    public func deallocate(at offset: UInt64, length: UInt64) throws(BlockStoreError) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        if overflow || end > self.byteCount { throw BlockStoreError.outOfRange }
        guard length > 0 else { return }
        if self.canPunchHoles.load(ordering: .relaxed) {
            while true {
                guard let fallocate = Self.fallocateFunction else {
                    self.canPunchHoles.store(false, ordering: .relaxed)
                    break
                }
                let rc = fallocate(self.descriptor, Self.fallocPunchHole | Self.fallocKeepSize,
                                   off_t(offset), off_t(length))
                if rc == 0 {
                    if self.writeThrough { try self.flush() }
                    return
                }
                let code = errno
                if code == EINTR { continue }
                if code == EOPNOTSUPP || code == ENOSYS || code == EINVAL || code == ENODEV {
                    self.canPunchHoles.store(false, ordering: .relaxed)
                    break
                }
                throw BlockStoreError.writeFailed(errno: code)
            }
        }
        // Fallback: write zeros.
        let chunk = [UInt8](repeating: 0, count: Int(min(length, 1 << 20)))
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(chunk.count), length - done))
            var failure: BlockStoreError?
            chunk.withUnsafeBytes { pointer in
                do {
                    try self.writeAll(UnsafeRawBufferPointer(rebasing: pointer[0..<count]), at: offset + done)
                } catch {
                    failure = (error as? BlockStoreError) ?? .writeFailed(errno: EIO)
                }
            }
            if let failure { throw failure }
            done += UInt64(count)
        }
    }

    /// Uses SEEK_DATA / SEEK_HOLE; file systems without them report everything as mapped.
    public func provisioningStatus(at offset: UInt64, length: UInt64) -> (mapped: Bool, length: UInt64) {
        guard length > 0 else { return (true, 0) }
        let data = lseek(self.descriptor, off_t(offset), Self.seekData)
        if data < 0 {
            return errno == ENXIO ? (false, length) : (true, length)
        }
        if UInt64(data) > offset {
            return (false, min(UInt64(data) - offset, length))
        }
        let hole = lseek(self.descriptor, off_t(offset), Self.seekHole)
        if hole < 0 || UInt64(hole) <= offset { return (true, length) }
        return (true, min(UInt64(hole) - offset, length))
    }
}

// MARK: In-kernel copies

extension FileBlockStore {
    private typealias CopyFileRangeFunction = @convention(c) (
        Int32, UnsafeMutablePointer<off_t>?, Int32, UnsafeMutablePointer<off_t>?, Int, UInt32) -> Int
    /// copy_file_range(2), looked up at run time like fallocate.
    private static let copyFileRangeFunction: CopyFileRangeFunction? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "copy_file_range") else { return nil }
        return unsafeBitCast(symbol, to: CopyFileRangeFunction.self)
    }()

    /// Copies `length` bytes from this store at `sourceOffset` to `destination` at
    /// `destinationOffset` inside the kernel (copy_file_range: reflinks where the file system
    /// can, no user-space buffer). Returns the bytes copied, which is less than `length` only
    /// when the kernel cannot do the rest (unsupported file systems, EXDEV, overlapping
    /// ranges of one file): the caller copies the remainder itself.
    public func copyRange(to destination: any BlockStore, sourceOffset: UInt64, destinationOffset: UInt64,
                          length: UInt64) throws(BlockStoreError) -> UInt64 {
        guard let destination = destination as? FileBlockStore else { return 0 }
        try self.checkRange(sourceOffset, length)
        try destination.checkRange(destinationOffset, length)
        guard let copyFileRange = Self.copyFileRangeFunction, !destination.isReadOnly else { return 0 }
        var done: UInt64 = 0
        while done < length {
            var input = off_t(sourceOffset + done)
            var output = off_t(destinationOffset + done)
            let request = Int(min(length - done, 1 << 30))
            let n = copyFileRange(self.descriptorForCopy, &input, destination.descriptorForCopy, &output, request, 0)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == ENOSPC || code == EDQUOT { throw BlockStoreError.noSpace }
                if code == EIO { throw BlockStoreError.writeFailed(errno: code) }
                return done  // EXDEV, EINVAL, ENOSYS, EOPNOTSUPP, EBADF...: fall back
            }
            if n == 0 { return done }
            done += UInt64(n)
        }
        if destination.writeThrough { try destination.flush() }
        return done
    }
}
