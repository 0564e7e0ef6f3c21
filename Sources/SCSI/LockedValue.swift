//
// LockedValue: a value behind a pthread mutex, with the `withLock` shape of
// `Synchronization.Mutex`. Used where ThreadSanitizer must see the lock: on Linux, Swift's
// `Mutex` locks with raw futex calls that TSan does not intercept, so two accesses under the
// same `Mutex` were reported as a race (the CI's thread-sanitizer stage: MemoryBlockStore,
// RODTokenStore). So every lock of the product is a `LockedValue` (or a NIO lock, also a
// pthread mutex); `Synchronization` is used for its atomics only.
//
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public final class LockedValue<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        self.mutex = .allocate(capacity: 1)
        self.mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(self.mutex, nil)
        precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return try body(&self.value)
    }
}
