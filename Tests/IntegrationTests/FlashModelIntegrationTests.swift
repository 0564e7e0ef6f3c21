// The flash model of a LU from the target definition to the log page: TOML keys, validation,
// writes through libiscsi, LOG SENSE page 30h, the server's accessor and its status.

import Foundation
import ISCSITarget
import Testing

@Suite("Flash write-amplification model")
struct FlashModelIntegrationTests {
    static func definition(_ flash: String) -> String {
        """
        [server]
        listen = "127.0.0.1:0"

        [[target]]
        name = "\(integrationIQN)"

          [[target.lun]]
          number = 0
          file = "flash-lun0.img"
          size = "16MiB"
          max_streams = 8
          permanent_streams = 6
        \(flash)
        """
    }

    @Test("invalid flash keys are configuration issues")
    func invalidKeys() {
        for (keys, message) in [
            ("flash_model = \"fifo\"", "must be \"per-stream\" or \"mixed\""),
            ("flash_erase_block = 65536", "required with the other flash keys"),
            ("flash_model = \"mixed\"\nflash_page_size = 4096\nflash_erase_block = 6000", "multiple of flash_page_size"),
            ("flash_model = \"per-stream\"\nflash_over_provisioning = 1", "spare erase blocks"),
        ] {
            do {
                _ = try ServerConfiguration.parse(toml: Self.definition(keys), stateDirectory: "/tmp")
                Issue.record("accepted \(keys)")
            } catch {
                #expect("\(error)".contains(message), "\(keys): \(error)")
            }
        }
    }

    @Test("writes with group numbers reach the model; log page 30h and the accessor agree")
    func writesReachTheModel() async throws {
        let toml = Self.definition("flash_model = \"per-stream\"\nflash_erase_block = 65536\nflash_over_provisioning = 28")
        let configuration = try ServerConfiguration.parse(toml: toml, stateDirectory: "/tmp")
        #expect(configuration.targets[0].luns[0].flash?.pagesPerBlock == 16)
        #expect(configuration.targets[0].luns[0].flash?.openUnits == 8)
        try await withTarget(toml: toml) { target in
            try await onThread("four WRITE(10) with group 2, LOG SENSE 30h") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                for lba: UInt8 in [0, 8, 16, 0] {
                    _ = try client.scsiCommand(lun: 0, cdb: [0x2A, 0, 0, 0, 0, lba, 2, 0, 8, 0],
                                               dataOut: [UInt8](repeating: lba, count: 4096))
                }
                let page = try client.scsiCommand(lun: 0, cdb: [0x4D, 0, 0x70, 0, 0, 0, 0, 0x01, 0x00, 0], dataInLength: 256)
                check.expectBytes(Array(page.prefix(16)), [0xB0, 0, 0, 0x40, 0, 0, 3, 8, 0, 0, 0, 0, 0, 0, 0, 4],
                                  "page 30h header and HOST PAGE WRITES")
                try client.logout()
            }
            let report = target.server.streamsExtension(target: integrationIQN)?.flashReport(lun: 0)
            #expect(report?.hostPageWrites == 4 && report?.flashPageWrites == 4)
            let status = target.server.status().targets.first?.luns.first?.flash
            #expect(status?.hostPageWrites == 4 && status?.flashPageWrites == 4)
            #expect(status?.blockErases == 0 && status?.writeAmplification == 1)
        }
    }

    @Test("EXTENDED COPY writes reach the model but not the command statistics; UNMAP and WRITE SAME(UNMAP) trim it")
    func copiesAndTrimsReachTheModel() async throws {
        let toml = Self.definition("thin = true\nflash_model = \"mixed\"\nflash_erase_block = 65536\nflash_over_provisioning = 28")
        try await withTarget(toml: toml) { target in
            try await onThread("writes, EXTENDED COPY, UNMAP") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                // Four 4 KiB pages: LBAs 0, 8, 16, 24.
                try client.write10(lun: 0, lba: 0, data: pattern(seed: 1, count: 16384))
                // Copy page 0 (8 blocks) to LBA 64 within the LU: one more host page for the flash device.
                try copyWithinSession(client, lun: 0, destinationLUN: 0, listID: 1, blocks: 8, sourceLBA: 0,
                                      destinationLBA: 64)
                // UNMAP LBAs 8-23 (pages 1 and 2), WRITE SAME(16) with UNMAP over LBA 24-31 (page 3).
                let unmap: [UInt8] = [0, 22, 0, 16, 0, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 16, 0, 0, 0, 0]
                _ = try client.scsiCommand(lun: 0, cdb: [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], dataOut: unmap)
                _ = try client.scsiCommand(lun: 0, cdb: [0x93, 0x08, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 8, 0, 0],
                                           dataOut: [UInt8](repeating: 0, count: 512))
                try client.logout()
            }
            let streams = target.server.streamsExtension(target: integrationIQN)
            let report = streams?.flashReport(lun: 0)
            #expect(report?.hostPageWrites == 5, "4 pages written by WRITE(10), 1 by EXTENDED COPY")
            #expect(report?.mappedPages == 2, "pages 0 and the copy at LBA 64 hold data; 1-3 were trimmed")
            // The group statistics count write commands: WRITE(10) and WRITE SAME; EXTENDED COPY and
            // UNMAP are not write commands.
            let total = streams?.statistics(lun: 0)?.groups.reduce(UInt64(0)) { $0 + $1.writeCommands }
            #expect(total == 2)
        }
    }
}
