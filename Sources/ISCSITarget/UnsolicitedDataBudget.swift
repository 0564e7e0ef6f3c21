//
// The server-wide budget for unsolicited write data (immediate data and unsolicited
// Data-Out up to FirstBurstLength): an initiator sends it without being asked, so the
// target must hold it as it arrives. Each connection reserves a command's share before the
// session machine sees the command and gives it back when the machine lets go of it
// (`SessionStateMachine.heldUnsolicitedBytes`). The policy is in `Docs/security.md`.
//
import NIOConcurrencyHelpers

final class UnsolicitedDataBudget: Sendable {
    /// 0: no limit (the bytes are still counted).
    let limit: Int
    private let held = NIOLockedValueBox(0)

    init(limit: Int) { self.limit = limit }

    /// Reserves `bytes` for a command of a session that holds `sessionHolds` bytes already.
    /// A session holding nothing always gets its command's share, so one session filling the
    /// budget never stalls another session's first write: the total stays within the limit
    /// plus one command's share per session.
    func reserve(_ bytes: Int, sessionHolds: Int) -> Bool {
        held.withLockedValue { held in
            guard limit == 0 || sessionHolds == 0 || held + bytes <= limit else { return false }
            held += bytes
            return true
        }
    }

    /// Adjusts by `delta` without a check (negative: bytes given back).
    func adjust(by delta: Int) {
        held.withLockedValue { $0 += delta }
    }

    var bytesHeld: Int { held.withLockedValue { $0 } }
}
