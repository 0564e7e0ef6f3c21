//
// Runs a connection's blocking commands (storage I/O) on the shared thread pool, in
// batches: one pool wake-up drains every command queued meanwhile, and completions go
// back to the event loop a batch at a time. Waking a pool thread per command costs more
// than a page-cache read, so batching is what keeps the event loop free at high IOPS.
// The first command a drain finishes goes back on its own, at once, so that its response
// leaves while the rest of the batch is written (the same reason the connection flushes
// the first response of a batch early); the others follow in batches.
// Up to `maximumWorkers` drains run at once per connection, so slow storage still
// sees parallel requests; by default as many as there are cores, at least 2 and at most 4
// (more drains than cores only add context switches when the I/O is page-cache I/O, and
// ext4 serialises buffered writes to one file anyway).
//
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SCSI

final class BlockingWorkQueue: @unchecked Sendable {
    struct Item {
        var initiatorTaskTag: UInt32
        var run: @Sendable () -> SCSIResponse
    }
    typealias Completion = (initiatorTaskTag: UInt32, response: SCSIResponse)

    private let lock = NIOLock()
    private var pending = CircularBuffer<Item>()
    private var activeWorkers = 0
    private let maximumWorkers: Int
    private let batchSize = 16
    private let pool: NIOThreadPool
    private let eventLoop: any EventLoop
    /// Called on the event loop with finished commands.
    private let deliver: @Sendable ([Completion]) -> Void

    static let defaultMaximumWorkers = min(4, max(2, System.coreCount))

    init(pool: NIOThreadPool, eventLoop: any EventLoop, maximumWorkers: Int = BlockingWorkQueue.defaultMaximumWorkers,
         deliver: @escaping @Sendable ([Completion]) -> Void)
    {
        self.pool = pool
        self.eventLoop = eventLoop
        self.maximumWorkers = maximumWorkers
        self.deliver = deliver
    }

    func submit(_ item: Item) {
        let startWorker: Bool = lock.withLock {
            pending.append(item)
            // A new worker when none runs, or when the backlog outgrows the running ones.
            if activeWorkers == 0 || (activeWorkers < maximumWorkers && pending.count > 2 * activeWorkers) {
                activeWorkers += 1
                return true
            }
            return false
        }
        if startWorker {
            pool.submit { [self] state in
                guard case .active = state else {
                    self.failAll()
                    return
                }
                self.drain()
            }
        }
    }

    private func drain() {
        var finished: [Completion] = []
        finished.reserveCapacity(batchSize)
        var first = true
        while true {
            let next: Item? = lock.withLock {
                if let item = pending.popFirst() { return item }
                activeWorkers -= 1
                return nil
            }
            guard let item = next else { break }
            finished.append((item.initiatorTaskTag, item.run()))
            if first || finished.count >= batchSize {
                first = false
                hand(finished)
                finished.removeAll(keepingCapacity: true)
            }
        }
        hand(finished)
    }

    private func hand(_ finished: [Completion]) {
        guard !finished.isEmpty else { return }
        let deliver = self.deliver
        eventLoop.execute { deliver(finished) }
    }

    /// The pool is shutting down: answer what is queued with BUSY.
    private func failAll() {
        let items: [Item] = lock.withLock {
            let all = Array(pending)
            pending.removeAll()
            activeWorkers = 0
            return all
        }
        hand(items.map { ($0.initiatorTaskTag, SCSIResponse(status: .busy)) })
    }
}
