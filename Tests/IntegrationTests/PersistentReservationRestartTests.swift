// APTPL over a real restart: a registration and reservation made with APTPL=1 through
// libiscsi are still there after the server is stopped and started over the same state
// directory (SPC-4 §5.14.5, "persist through power loss").

import Foundation
import Testing

@Suite("Persistent reservations across a target restart")
struct PersistentReservationRestartTests {
    static let definition = """
        [server]
        listen = "127.0.0.1:0"

        [[target]]
        name = "\(integrationIQN)"

          [[target.lun]]
          number = 0
          file = "aptpl-lun0.img"
          size = "16MiB"
          persist_reservations = true
        """

    @Test("REGISTER with APTPL=1 and a WRITE EXCLUSIVE reservation survive a restart")
    func aptplSurvivesRestart() async throws {
        let directory = try makeStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key: [UInt8] = [0, 0, 0, 0, 0, 0, 0xAB, 0xCD]
        // PERSISTENT RESERVE OUT parameter list: RESERVATION KEY (0–7), SERVICE ACTION
        // RESERVATION KEY (8–15), APTPL = byte 20 bit 0.
        let register = [UInt8](repeating: 0, count: 8) + key + [0, 0, 0, 0, 0x01, 0, 0, 0]
        let reserve = key + [UInt8](repeating: 0, count: 16)
        try await withTarget(toml: Self.definition, stateDirectory: directory) { target in
            try await onThread("register and reserve") { _ in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                _ = try client.scsiCommand(lun: 0, cdb: [0x5F, 0x00, 0x00, 0, 0, 0, 0, 0, 24, 0], dataOut: register)
                _ = try client.scsiCommand(lun: 0, cdb: [0x5F, 0x01, 0x01, 0, 0, 0, 0, 0, 24, 0], dataOut: reserve)
                try client.logout()
            }
        }
        try await withTarget(toml: Self.definition, stateDirectory: directory) { target in
            try await onThread("read keys and reservation after restart") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                let keys = try client.scsiCommand(lun: 0, cdb: [0x5E, 0x00, 0, 0, 0, 0, 0, 0, 64, 0], dataInLength: 64)
                check.expectBytes(Array(keys.dropFirst(4).prefix(12)), [0, 0, 0, 8] + key, "READ KEYS after restart")
                let reservation = try client.scsiCommand(lun: 0, cdb: [0x5E, 0x01, 0, 0, 0, 0, 0, 0, 64, 0], dataInLength: 64)
                check.expectBytes(Array(reservation.dropFirst(4).prefix(12)), [0, 0, 0, 16] + key,
                                  "READ RESERVATION after restart")
                check.expect(reservation.count > 21 && reservation[21] == 0x01, "reservation type WRITE EXCLUSIVE")
                try client.logout()
            }
        }
    }
}
