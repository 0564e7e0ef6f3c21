//
// The life of one ROD token, as a value-type state machine. Events in, actions out; time is
// passed in with each event and nothing here reads a clock or touches storage.
//
//                 populated                 use requested
//   populating ──────────────▶ valid ◀──────────────────────▶ in use (n writers)
//        │                       │           last use ended          │
//        │ populate failed       │ inactivity timeout passed         │ use ended with DEL_TKN
//        ▼                       ▼                                   ▼  (once the last writer ends)
//     (forgotten)             expired                             deleted
//
//   source written (change-vulnerable tokens only) ─▶ cancelled     from populating, valid, in use
//   LU reset, target reset, LUN removed            ─▶ revoked       from populating, valid, in use
//
// expired, deleted, cancelled and revoked are terminal: the token is a tombstone that answers
// every use with its own ASCQ (23/07, 23/09, 23/08, 23/06) until `tombstoneLifetime` passes;
// then it is forgotten and a use gets TOKEN UNKNOWN (23/04) like any token never seen.
// The inactivity timer runs only while nobody uses the token; it restarts when the last
// writer ends.
//
import NIOCore

public struct RODTokenMachine: Sendable, Equatable {
    public enum End: String, Sendable, Equatable {
        case expired, deleted, cancelled, revoked

        /// The answer a tombstone gives to a use.
        public var error: RODTokenError {
            switch self {
            case .expired: .tokenExpired
            case .deleted: .tokenDeleted
            case .cancelled: .tokenCancelled
            case .revoked: .tokenRevoked
            }
        }
    }

    public enum State: Sendable, Equatable {
        case populating
        case valid(idleSince: NIODeadline)
        /// `deletePending`: a writer asked for DEL_TKN; the token goes when the last one ends.
        case inUse(writers: Int, deletePending: Bool)
        case ended(End, at: NIODeadline)
    }

    public enum Event: Sendable, Equatable {
        case populated(now: NIODeadline)
        case populateFailed
        case useRequested(now: NIODeadline)
        case useEnded(now: NIODeadline, deleteToken: Bool)
        /// A write, WRITE SAME, UNMAP, ... touched the token's source ranges. Delivered only
        /// to change-vulnerable tokens (persistent ones keep their data instead).
        case sourceModified(now: NIODeadline)
        case revoked(now: NIODeadline)
        case tick(now: NIODeadline)
    }

    public enum Action: Sendable, Equatable {
        /// The use may go ahead.
        case grantUse
        /// The use is refused with this error.
        case refuseUse(RODTokenError)
        /// The token's preserved data (persistent tokens) and source watch may go.
        case releaseStorage
        /// Drop the record entirely.
        case forget
    }

    public private(set) var state: State = .populating
    public let inactivityTimeout: TimeAmount
    public let tombstoneLifetime: TimeAmount

    public init(inactivityTimeout: TimeAmount, tombstoneLifetime: TimeAmount) {
        self.inactivityTimeout = inactivityTimeout
        self.tombstoneLifetime = tombstoneLifetime
    }

    public var isTerminal: Bool {
        if case .ended = self.state { return true }
        return false
    }

    /// The error a use gets now, or nil when the token may be used.
    public var useError: RODTokenError? {
        switch self.state {
        case .populating: .tokenUnknown
        case .valid: nil
        case .inUse(_, let deletePending): deletePending ? .tokenDeleted : nil
        case .ended(let end, _): end.error
        }
    }

    /// When `tick` will next change something (expiry, or a tombstone's end).
    public var deadline: NIODeadline? {
        switch self.state {
        case .populating, .inUse: nil
        case .valid(let idleSince): idleSince + self.inactivityTimeout
        case .ended(_, let at): at + self.tombstoneLifetime
        }
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (self.state, event) {
        case (.populating, .populated(let now)):
            self.state = .valid(idleSince: now)
            return []
        case (.populating, .populateFailed):
            return [.releaseStorage, .forget]
        case (_, .populateFailed), (_, .populated):
            return []

        case (.valid, .useRequested):
            self.state = .inUse(writers: 1, deletePending: false)
            return [.grantUse]
        case (.inUse(let writers, false), .useRequested):
            self.state = .inUse(writers: writers + 1, deletePending: false)
            return [.grantUse]
        case (.inUse(_, true), .useRequested):
            return [.refuseUse(.tokenDeleted)]
        case (.populating, .useRequested):
            return [.refuseUse(.tokenUnknown)]
        case (.ended(let end, _), .useRequested):
            return [.refuseUse(end.error)]

        case (.inUse(let writers, let pending), .useEnded(let now, let deleteToken)):
            let delete = pending || deleteToken
            if writers > 1 {
                self.state = .inUse(writers: writers - 1, deletePending: delete)
                return []
            }
            if delete {
                self.state = .ended(.deleted, at: now)
                return [.releaseStorage]
            }
            self.state = .valid(idleSince: now)
            return []
        case (_, .useEnded):
            return []

        case (.populating, .sourceModified(let now)), (.valid, .sourceModified(let now)),
             (.inUse, .sourceModified(let now)):
            self.state = .ended(.cancelled, at: now)
            return [.releaseStorage]
        case (.ended, .sourceModified):
            return []

        case (.populating, .revoked(let now)), (.valid, .revoked(let now)), (.inUse, .revoked(let now)):
            self.state = .ended(.revoked, at: now)
            return [.releaseStorage]
        case (.ended, .revoked):
            return []

        case (.valid(let idleSince), .tick(let now)):
            guard now >= idleSince + self.inactivityTimeout else { return [] }
            self.state = .ended(.expired, at: now)
            return [.releaseStorage]
        case (.ended(_, let at), .tick(let now)):
            return now >= at + self.tombstoneLifetime ? [.forget] : []
        case (.populating, .tick), (.inUse, .tick):
            return []
        }
    }
}

extension RODTokenMachine.State: CustomStringConvertible {
    public var description: String {
        switch self {
        case .populating: "populating"
        case .valid: "valid"
        case .inUse(let writers, let pending): pending ? "in use by \(writers) (delete pending)" : "in use by \(writers)"
        case .ended(let end, _): end.rawValue
        }
    }
}
