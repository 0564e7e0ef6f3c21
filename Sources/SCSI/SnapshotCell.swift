//
// SnapshotCell: a value that every command reads and the operator changes now and then (the
// logical units of a target, their per-LU counters and stream state).
//
// Readers take no lock: one acquiring load of a pointer to an immutable snapshot. Writers
// are serialised by a mutex and publish a new snapshot with a releasing store. The hard part
// of such schemes is knowing when no reader still looks at an old snapshot; this cell does
// not try. Every snapshot it ever published stays allocated until the cell goes, so a reader
// holding an unretained pointer can never see freed memory. A change costs the memory of one
// snapshot for the cell's lifetime, which is why the cell is for changes at operator speed
// (adding or removing a LUN), never for per-command state.
//
// What a retired snapshot keeps alive matters: a removed logical unit stays allocated, so its
// resources that matter (the backing file) are released explicitly (`BlockStore.detach`).
//
import Synchronization

public final class SnapshotCell<Value: Sendable>: Sendable {
    @usableFromInline
    final class Snapshot: Sendable {
        @usableFromInline let value: Value
        init(_ value: Value) { self.value = value }
    }

    private let current: Atomic<Unmanaged<Snapshot>>
    /// Every snapshot ever published (the current one last), retained for the cell's lifetime.
    private let published: LockedValue<[Snapshot]>

    public init(_ value: Value) {
        let first = Snapshot(value)
        self.current = Atomic(Unmanaged.passUnretained(first))
        self.published = LockedValue([first])
    }

    /// Runs `body` on the current value without copying it or touching a reference count.
    @inlinable
    public func withValue<R>(_ body: (Value) throws -> R) rethrows -> R {
        try self.load()._withUnsafeGuaranteedRef { try body($0.value) }
    }

    @usableFromInline
    func load() -> Unmanaged<Snapshot> { self.current.load(ordering: .acquiring) }

    /// A copy of the current value.
    public var value: Value { self.withValue { $0 } }

    /// Changes the value: `body` gets a copy of the current one and what it leaves is published
    /// when it returns; when it throws, nothing is published. Writers run one at a time.
    @discardableResult
    public func update<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try self.published.withLock { (published: inout [Snapshot]) throws(E) -> R in
            var value = published[published.count - 1].value
            let result = try body(&value)
            let next = Snapshot(value)
            published.append(next)
            self.current.store(Unmanaged.passUnretained(next), ordering: .releasing)
            return result
        }
    }
}
