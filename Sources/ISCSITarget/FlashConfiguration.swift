//
// The per-LUN flash model keys of the target definition (Docs/configuration.md):
//   flash_model = "per-stream" | "mixed"   enables the model (placement of writes)
//   flash_page_size = 4096                 bytes, a power of two ≥ 512
//   flash_erase_block = 1048576            bytes, a multiple of the page size
//   flash_over_provisioning = 7            percent of the logical capacity (0–400)
//
import SCSIStreams
import TOMLKit

/// The flash settings of LUN table `l`, or nil (none configured, or an issue was reported).
func flashSettings(_ l: TOMLTable, openUnits: Int, blockCount: UInt64, blockSize: Int,
                   integer: (String, ClosedRange<Int>) -> Int?,
                   issue: (_ key: String, _ why: String) -> Void) -> FlashModelSettings? {
    let page = integer("flash_page_size", 512...(1 << 20))
    let block = integer("flash_erase_block", 1024...(1 << 30))
    let spare = integer("flash_over_provisioning", 0...400)
    guard let value = l["flash_model"] else {
        if page != nil || block != nil || spare != nil {
            issue("flash_model", "required with the other flash keys (\"per-stream\" or \"mixed\")")
        }
        return nil
    }
    guard let name = value.string, let placement = FlashPlacement(rawValue: name) else {
        issue("flash_model", "must be \"per-stream\" or \"mixed\"")
        return nil
    }
    let pageBytes = page ?? 4096
    let blockBytes = block ?? 1 << 20
    guard blockBytes % pageBytes == 0 else {
        issue("flash_erase_block", "must be a multiple of flash_page_size (\(pageBytes))")
        return nil
    }
    let settings = FlashModelSettings(pageBytes: pageBytes, pagesPerBlock: blockBytes / pageBytes,
                                      overProvisioning: Double(spare ?? 7) / 100, placement: placement,
                                      openUnits: min(max(openUnits, 1), 64))
    do {
        try FlashModel.validate(settings: settings, blockCount: blockCount, blockSize: blockSize)
    } catch {
        issue("flash_model", "\(error)")
        return nil
    }
    return settings
}
