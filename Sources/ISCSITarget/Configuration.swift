//
// Target definitions: the TOML files under Targets/ (format in Docs/configuration.md).
//
// Parsing collects every problem it finds, each with its key path and, where the source
// shows it, its line, so that `iscsi-target check-config` can list them all at once.
//
import CopyOffload
import Foundation
import ISCSIEngine
import SCSI
import SCSIStreams
import TOMLKit

/// One problem in a target definition.
public struct ConfigurationIssue: Sendable, Equatable, CustomStringConvertible {
    public var keyPath: String
    public var line: Int?
    public var message: String

    public var description: String {
        if let line { return "line \(line): \(keyPath): \(message)" }
        return "\(keyPath): \(message)"
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public var issues: [ConfigurationIssue]
    public var source: String
    public var description: String {
        "invalid target definition \(source):\n" + issues.map { "  " + $0.description }.joined(separator: "\n")
    }
}

public enum CachePolicy: String, Sendable {
    /// Writes go to the page cache; FUA and SYNCHRONIZE CACHE flush (WCE=1).
    case writeBack = "write-back"
    /// Every write is durable before GOOD (WCE=0).
    case writeThrough = "write-through"
}

public struct LUNDefinition: Sendable {
    public var number: UInt16
    /// Absolute path of the backing file.
    public var path: String
    public var byteCount: UInt64
    public var blockSize: Int
    public var cache: CachePolicy
    public var readOnly: Bool
    public var thinProvisioned: Bool
    public var nonRotational: Bool
    public var vendor: String?
    public var product: String?
    public var serialNumber: String?
    /// SBC write streams (keys `max_streams`, `permanent_streams`, `optimal_stream_write_size`,
    /// `stream_granularity_size`); nil: the LU has no streams.
    public var streams: StreamSettings? = nil
    /// Removable medium (key `removable`): INQUIRY RMB, PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT LOEJ.
    public var removable: Bool = false
    /// READ(32)/WRITE(32) offered (key `read_write_32`).
    public var readWrite32: Bool = false
    /// Minimum duration of a SANITIZE operation in seconds (key `sanitize_seconds`).
    public var sanitizeSeconds: Int = 0
    /// APTPL supported (key `persist_reservations`): reservations survive a restart in `<file>.reservations`.
    public var persistReservations: Bool = false
    /// LUN masking (key `allowed_initiators`): only these initiators see the LUN; nil: all.
    public var allowedInitiators: [String]? = nil
    /// Flash write-amplification model behind the LU (keys `flash_model`, `flash_page_size`,
    /// `flash_erase_block`, `flash_over_provisioning`); nil: none.
    public var flash: FlashModelSettings? = nil
}

public struct TargetDefinition: Sendable {
    public var name: String
    public var alias: String?
    public var portalGroupTag: UInt16
    public var luns: [LUNDefinition]
    /// EXTENDED COPY limits of this target's copy manager (table `[target.copy]`).
    public var copyLimits = CopyLimits()
    /// ROD token limits of this target's copy manager (table `[target.tokens]`).
    public var tokenLimits = RODTokenLimits()
    /// CHAP required to log in (table `[target.chap]`); nil: AuthMethod=None.
    public var chap: CHAPAccount? = nil
    /// Initiator names allowed to log in (key `allowed_initiators`); nil: every initiator.
    public var allowedInitiators: [String]? = nil
}

public struct ServerConfiguration: Sendable {
    public var listenHost: String
    public var listenPort: Int
    /// `host:port` returned as TargetAddress by SendTargets; nil: the connection's local address.
    public var advertise: String?
    public var stateDirectory: String
    public var targets: [TargetDefinition]
    /// Command window per session (MaxCmdSN - ExpCmdSN + 1).
    public var commandWindow: Int = 128
    /// Target NOP-In ping interval in seconds (0 disables).
    public var nopInterval: Int = 10
    /// Test-only fault injection (environment ISCSI_TARGET_FAULT=drop-last-data-in).
    public var faultDropLastDataIn = false
    /// `host:port` of the Prometheus metrics listener (`[server] metrics`); nil: none.
    public var metricsListen: String? = nil
    /// The control socket `iscsi-target status` talks to (mode 0600); nil: none.
    /// Default: `<state_dir>/control.sock`.
    public var controlSocket: String? = nil

    /// The control socket path in effect.
    public var controlSocketPath: String? {
        controlSocket ?? (stateDirectory as NSString).appendingPathComponent("control.sock")
    }
    /// CHAP required for discovery sessions (table `[discovery.chap]`); nil: AuthMethod=None.
    public var discoveryCHAP: CHAPAccount? = nil
    /// Sessions of the whole process (key `max_sessions`); 0: only the TSIH space limits them.
    public var maximumSessions: Int = 0
    /// TCP connections from one source address at a time (key `max_connections_per_address`); 0: no limit.
    public var maximumConnectionsPerAddress: Int = 0
    /// Seconds a connection may spend in the login phase (key `login_timeout`).
    public var loginTimeout: Int = 30
    /// The definition's text as parsed: runtime changes edit it (`DefinitionEditor`) and
    /// `iscsi-target save` writes it back.
    public var definitionText: String? = nil
    /// The file the definition came from (nil: it was given as a string).
    public var definitionPath: String? = nil
    /// Where relative secret files are read from (see `parse`).
    public var definitionBaseDirectory: String? = nil
    /// Bytes of unsolicited and immediate write data all sessions together may hold (key
    /// `max_unsolicited_bytes`); 0: no limit. Over it a command is answered BUSY or TASK SET
    /// FULL (`Docs/security.md`).
    public var maximumUnsolicitedBytes: Int = 256 << 20
    /// The smallest non-zero `max_unsolicited_bytes`: four times the largest FirstBurstLength
    /// the target negotiates, so one session's first command always fits.
    public static let minimumUnsolicitedBudget = 1 << 20

    public static let defaultListen = "127.0.0.1:3260"

    /// Every key the parser accepts, by table ("" is the root; "chap" is `[target.chap]` and
    /// `[discovery.chap]`). Docs/configuration.md is checked against this list by a test.
    public static let knownKeys: [String: Set<String>] = [
        "": ["server", "target", "discovery"],
        "server": [
            "listen", "advertise", "state_dir", "command_window", "nop_interval", "max_sessions",
            "max_connections_per_address", "login_timeout", "metrics", "max_unsolicited_bytes",
        ],
        "discovery": ["chap"],
        "chap": ["user", "secret", "secret_file", "mutual_user", "mutual_secret", "mutual_secret_file"],
        "target": ["name", "alias", "portal_group", "lun", "copy", "tokens", "chap", "allowed_initiators"],
        "target.lun": [
            "number", "file", "size", "block_size", "cache", "read_only", "thin", "non_rotational", "vendor", "product",
            "serial", "max_streams", "permanent_streams", "optimal_stream_write_size", "stream_granularity_size",
            "write_stream_32", "read_write_32", "removable", "sanitize_seconds", "persist_reservations",
            "allowed_initiators", "flash_model", "flash_page_size", "flash_erase_block", "flash_over_provisioning",
        ],
        "target.copy": [
            "max_cscd_descriptors", "max_segment_descriptors", "max_descriptor_list_length", "max_segment_length",
            "max_concurrent_copies", "held_results_seconds",
        ],
        "target.tokens": [
            "default_inactivity_timeout", "max_inactivity_timeout", "max_tokens", "max_token_transfer_size",
            "optimal_transfer_count", "max_range_descriptors", "default_rod_type", "tombstone_seconds",
            "accept_ddpt_range_layout",
        ],
    ]

    /// Parse `host:port` (IPv6 in brackets). Port 0 asks for an ephemeral port.
    public static func parseHostPort(_ s: String) -> (String, Int)? {
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return nil }
            let host = String(s[s.index(after: s.startIndex)..<close])
            let rest = s[s.index(after: close)...]
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (0...65535).contains(port) else { return nil }
            return (host, port)
        }
        guard let colon = s.lastIndex(of: ":") else { return nil }
        let host = String(s[..<colon])
        guard !host.isEmpty, !host.contains(":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port)
        else { return nil }
        return (host, port)
    }

    /// Parse sizes such as `1GiB`, `512MiB`, `4096`, `10G` (binary units).
    public static func parseSize(_ s: String) -> UInt64? {
        let t = s.trimmingCharacters(in: .whitespaces)
        let units: [(String, UInt64)] = [
            ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
            ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1),
        ]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            guard let n = UInt64(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)) else { return nil }
            let (v, overflow) = n.multipliedReportingOverflow(by: factor)
            return overflow ? nil : v
        }
        return UInt64(t)
    }

    /// Validate an iSCSI name (RFC 7143 §4.2.7): iqn., eui. or naa. forms, at most 223 bytes.
    public static func isValidISCSIName(_ name: String) -> Bool {
        guard name.utf8.count <= 223, !name.isEmpty else { return false }
        let lower = name.lowercased()
        if lower.hasPrefix("iqn.") {
            // iqn.yyyy-mm.reversed.domain[:anything]
            let parts = lower.dropFirst(4)
            guard parts.count >= 8 else { return false }
            let date = parts.prefix(7)
            let ok = date.enumerated().allSatisfy { i, c in i == 4 ? c == "-" : c.isNumber }
            let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: ".-:"))
            return ok && lower.unicodeScalars.allSatisfy { allowed.contains($0) }
        }
        if lower.hasPrefix("eui.") { return lower.count == 20 && lower.dropFirst(4).allSatisfy(\.isHexDigit) }
        if lower.hasPrefix("naa.") {
            let n = lower.count - 4
            return (n == 16 || n == 32) && lower.dropFirst(4).allSatisfy(\.isHexDigit)
        }
        return false
    }

    /// Load a definition file. `stateDirectory`, `listen` and `advertise` override the file.
    public static func load(path: String, stateDirectory: String? = nil, listen: String? = nil,
                            advertise: String? = nil) throws -> ServerConfiguration
    {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(issues: [ConfigurationIssue(keyPath: "(file)", line: nil,
                                                                 message: "cannot read: \(error.localizedDescription)")],
                                     source: path)
        }
        var configuration = try parse(toml: text, stateDirectory: stateDirectory, listen: listen, advertise: advertise,
                                      source: path, baseDirectory: (path as NSString).deletingLastPathComponent)
        configuration.definitionPath = URL(fileURLWithPath: path).standardizedFileURL.path
        return configuration
    }

    /// Parse a definition. Throws `ConfigurationError` listing every problem. Relative secret
    /// files are read from `baseDirectory` (the definition file's directory; default: the
    /// current directory).
    public static func parse(toml: String, stateDirectory: String? = nil, listen: String? = nil,
                             advertise: String? = nil, source: String = "(string)",
                             baseDirectory: String? = nil) throws -> ServerConfiguration
    {
        var issues: [ConfigurationIssue] = []
        let locator = LineLocator(text: toml)
        let root: TOMLTable
        do {
            root = try TOMLTable(string: toml)
        } catch let error as TOMLParseError {
            throw ConfigurationError(issues: [ConfigurationIssue(keyPath: "(syntax)", line: error.source.begin.line,
                                                                 message: error.description)], source: source)
        }
        func issue(_ path: String, _ message: String, section: LineLocator.Section = .root, key: String? = nil) {
            issues.append(ConfigurationIssue(keyPath: path, line: locator.line(section: section, key: key), message: message))
        }
        func checkKeys(_ table: TOMLTable, allowed: Set<String>, path: String, section: LineLocator.Section) {
            for key in table.keys where !allowed.contains(key) {
                issue(path.isEmpty ? key : "\(path).\(key)", "unknown key", section: section, key: key)
            }
        }
        /// The integer at `key` of `table` if it lies in `range`; reports it otherwise (nil when absent).
        func integerValue(_ table: TOMLTable, _ key: String, _ range: ClosedRange<Int>, path: String,
                          section: LineLocator.Section) -> Int? {
            guard let v = table[key] else { return nil }
            guard let n = v.int, range.contains(n) else {
                issue("\(path).\(key)", "must be an integer from \(range.lowerBound) to \(range.upperBound)",
                      section: section, key: key)
                return nil
            }
            return n
        }

        /// `[target.copy]`: EXTENDED COPY limits (see Docs/copy-offload.md).
        func parseCopyLimits(_ copy: TOMLTable, path: String, section: LineLocator.Section) -> CopyLimits {
            checkKeys(copy, allowed: Self.knownKeys["target.copy"]!,
                      path: path, section: section)
            func integer(_ key: String, _ range: ClosedRange<Int>) -> Int? {
                integerValue(copy, key, range, path: path, section: section)
            }
            var limits = CopyLimits()
            if let n = integer("max_cscd_descriptors", 1...2048) { limits.maximumCSCDCount = n }
            if let n = integer("max_segment_descriptors", 1...4096) { limits.maximumSegmentCount = n }
            if let n = integer("max_descriptor_list_length", 64...65535) { limits.maximumDescriptorListLength = n }
            if let n = integer("max_concurrent_copies", 1...255) {
                limits.maximumConcurrentCopies = UInt8(n)
                limits.totalConcurrentCopies = UInt16(n)
            }
            if let n = integer("held_results_seconds", 1...3600) { limits.heldResultsLifetime = Int64(n) }
            if let v = copy["max_segment_length"] {
                let bytes = v.int.map { UInt64(max(0, $0)) } ?? v.string.flatMap(parseSize)
                if let bytes, bytes <= UInt64(UInt32.max) {
                    limits.maximumSegmentLength = UInt32(bytes)
                } else {
                    issue("\(path).max_segment_length", "must be bytes or a size such as \"256MiB\" below 4GiB (0: no limit)",
                          section: section, key: "max_segment_length")
                }
            }
            return limits
        }

        /// `[target.tokens]`: POPULATE TOKEN / WRITE USING TOKEN limits (see Docs/copy-offload.md).
        func parseTokenLimits(_ tokens: TOMLTable, path: String, section: LineLocator.Section) -> RODTokenLimits {
            checkKeys(tokens, allowed: Self.knownKeys["target.tokens"]!,
                      path: path, section: section)
            func integer(_ key: String, _ range: ClosedRange<Int>) -> Int? {
                integerValue(tokens, key, range, path: path, section: section)
            }
            var limits = RODTokenLimits()
            if let n = integer("max_inactivity_timeout", 1...86400) { limits.maximumInactivityTimeout = UInt32(n) }
            if let n = integer("default_inactivity_timeout", 1...86400) {
                if UInt32(n) > limits.maximumInactivityTimeout {
                    issue("\(path).default_inactivity_timeout", "must not exceed max_inactivity_timeout (\(limits.maximumInactivityTimeout))",
                          section: section, key: "default_inactivity_timeout")
                } else {
                    limits.defaultInactivityTimeout = UInt32(n)
                }
            }
            if let n = integer("max_tokens", 1...65536) { limits.maximumTokens = n }
            if let n = integer("max_token_transfer_size", 0...Int(UInt32.max)) { limits.maximumTokenTransferSize = UInt64(n) }
            if let n = integer("optimal_transfer_count", 0...Int(UInt32.max)) { limits.optimalTransferCount = UInt64(n) }
            if let n = integer("max_range_descriptors", 1...1024) { limits.maximumRangeDescriptors = n }
            if let n = integer("tombstone_seconds", 1...86400) { limits.tombstoneLifetime = Int64(n) }
            if let v = tokens["accept_ddpt_range_layout"] {
                if let flag = v.bool {
                    limits.acceptDDPTRangeLayout = flag
                } else {
                    issue("\(path).accept_ddpt_range_layout", "must be true or false", section: section,
                          key: "accept_ddpt_range_layout")
                }
            }
            if let v = tokens["default_rod_type"] {
                let names = RODType.creatable.map(\.description)
                if let name = v.string, let type = RODType(name: name), RODType.creatable.contains(type) {
                    limits.defaultRODType = type
                } else {
                    issue("\(path).default_rod_type", "must be one of \(names.map { "\"\($0)\"" }.joined(separator: ", "))",
                          section: section, key: "default_rod_type")
                }
            }
            return limits
        }

        /// `[target.chap]` / `[discovery.chap]`: a CHAP account. Secrets are never echoed in issues.
        func parseCHAP(_ value: any TOMLValueConvertible, path: String, section: LineLocator.Section) -> CHAPAccount? {
            guard let chap = value.table else {
                issue(path, "must be a table", section: section)
                return nil
            }
            checkKeys(chap, allowed: Self.knownKeys["chap"]!,
                      path: path, section: section)
            func name(_ key: String) -> String? {
                guard let v = chap[key] else { return nil }
                guard let s = v.string, !s.isEmpty, s.utf8.count <= 255, s.allSatisfy({ !$0.isNewline }) else {
                    issue("\(path).\(key)", "must be a name of 1 to 255 bytes", section: section, key: key)
                    return nil
                }
                return s
            }
            func secret(_ key: String) -> CHAPSecret? {
                let fileKey = key + "_file"
                let bytes: [UInt8]
                let reported: String
                switch (chap[key], chap[fileKey]) {
                case (nil, nil):
                    return nil
                case (.some, .some):
                    issue("\(path).\(key)", "give either \(key) or \(fileKey), not both", section: section, key: key)
                    return nil
                case (let v?, nil):
                    reported = key
                    guard let s = v.string else {
                        issue("\(path).\(key)", "must be a string", section: section, key: key)
                        return nil
                    }
                    bytes = Array(s.utf8)
                case (nil, let v?):
                    reported = fileKey
                    guard let f = v.string, !f.isEmpty else {
                        issue("\(path).\(fileKey)", "must be a file path", section: section, key: fileKey)
                        return nil
                    }
                    let full = f.hasPrefix("/") ? f : (baseDirectory ?? FileManager.default.currentDirectoryPath) + "/" + f
                    guard let data = FileManager.default.contents(atPath: full) else {
                        issue("\(path).\(fileKey)", "cannot read \"\(full)\"", section: section, key: fileKey)
                        return nil
                    }
                    // One line: a trailing newline (as editors write it) is not part of the secret.
                    var b = [UInt8](data)
                    while let last = b.last, last == 0x0A || last == 0x0D { b.removeLast() }
                    bytes = b
                }
                guard bytes.count >= CHAPSecret.minimumLength, bytes.count <= CHAPSecret.maximumLength else {
                    issue("\(path).\(reported)", "a CHAP secret must be \(CHAPSecret.minimumLength) to \(CHAPSecret.maximumLength) bytes "
                          + "(RFC 7143 §12.1.3), this one is \(bytes.count)", section: section, key: reported)
                    return nil
                }
                return CHAPSecret(bytes)
            }
            let user = name("user")
            let secretValue = secret("secret")
            let mutualUser = name("mutual_user")
            let mutualSecret = secret("mutual_secret")
            if chap["user"] == nil { issue("\(path).user", "required", section: section) }
            if chap["secret"] == nil && chap["secret_file"] == nil { issue("\(path).secret", "required (or secret_file)", section: section) }
            let mutualGiven = chap["mutual_user"] != nil || chap["mutual_secret"] != nil || chap["mutual_secret_file"] != nil
            if mutualGiven && chap["mutual_user"] == nil { issue("\(path).mutual_user", "required with a mutual secret", section: section) }
            if mutualGiven && chap["mutual_secret"] == nil && chap["mutual_secret_file"] == nil {
                issue("\(path).mutual_secret", "required with mutual_user (or mutual_secret_file)", section: section)
            }
            if let secretValue, let mutualSecret, secretValue == mutualSecret {
                issue("\(path).mutual_secret", "must differ from the initiator's secret (RFC 7143 §12.1.3)",
                      section: section, key: chap["mutual_secret"] != nil ? "mutual_secret" : "mutual_secret_file")
            }
            guard let user, let secretValue else { return nil }
            if mutualGiven && (mutualUser == nil || mutualSecret == nil) { return nil }
            return CHAPAccount(user: user, secret: secretValue, mutualUser: mutualUser, mutualSecret: mutualSecret)
        }

        /// `allowed_initiators = ["iqn...", ...]` of a target or a LUN; nil when absent.
        func parseInitiatorNames(_ table: TOMLTable, path: String, section: LineLocator.Section) -> [String]? {
            guard let value = table["allowed_initiators"] else { return nil }
            let key = "allowed_initiators"
            let names = value.array.map { elements($0).map { $0.string } } ?? [nil]
            guard !names.contains(where: { $0 == nil }) else {
                issue("\(path).\(key)", "must be an array of iSCSI names", section: section, key: key)
                return nil
            }
            let result = names.compactMap { $0 }
            for n in result where !isValidISCSIName(n) {
                issue("\(path).\(key)", "\"\(n)\" is not an iSCSI name", section: section, key: key)
            }
            return result
        }

        checkKeys(root, allowed: Self.knownKeys[""]!, path: "", section: .root)
        var discoveryCHAP: CHAPAccount?
        if let value = root["discovery"] {
            if let discovery = value.table {
                checkKeys(discovery, allowed: Self.knownKeys["discovery"]!, path: "discovery", section: .table("[discovery]"))
                if let chap = discovery["chap"] {
                    discoveryCHAP = parseCHAP(chap, path: "discovery.chap", section: .table("[discovery.chap]"))
                }
            } else {
                issue("discovery", "must be a table")
            }
        }
        let server = root["server"]?.table
        if root["server"] != nil && server == nil { issue("server", "must be a table") }
        if let server {
            checkKeys(server, allowed: Self.knownKeys["server"]!,
                      path: "server", section: .server)
        }

        var listenHost = "127.0.0.1", listenPort = 3260
        let listenText = listen ?? server?["listen"]?.string ?? defaultListen
        if let (h, p) = parseHostPort(listenText) {
            listenHost = h
            listenPort = p
        } else {
            issue("server.listen", "expected HOST:PORT, got \"\(listenText)\"", section: .server, key: "listen")
        }
        let advertiseText = advertise ?? server?["advertise"]?.string
        if let a = advertiseText, parseHostPort(a) == nil {
            issue("server.advertise", "expected HOST:PORT, got \"\(a)\"", section: .server, key: "advertise")
        }
        let state = stateDirectory ?? server?["state_dir"]?.string ?? "state"
        let stateAbsolute = URL(fileURLWithPath: state).standardizedFileURL.path
        var window = 128
        if let w = server?["command_window"] {
            if let n = w.int, (1...4096).contains(n) { window = n } else {
                issue("server.command_window", "must be an integer from 1 to 4096", section: .server, key: "command_window")
            }
        }
        var metrics: String?
        if let m = server?["metrics"] {
            if let text = m.string, parseHostPort(text) != nil { metrics = text } else {
                issue("server.metrics", "expected HOST:PORT for the Prometheus listener", section: .server, key: "metrics")
            }
        }
        var nop = 10
        if let w = server?["nop_interval"] {
            if let n = w.int, (0...3600).contains(n) { nop = n } else {
                issue("server.nop_interval", "must be seconds from 0 (off) to 3600", section: .server, key: "nop_interval")
            }
        }

        func serverInteger(_ key: String, _ range: ClosedRange<Int>, _ meaning: String) -> Int? {
            guard let v = server?[key] else { return nil }
            guard let n = v.int, range.contains(n) else {
                issue("server.\(key)", "must be \(meaning) from \(range.lowerBound) to \(range.upperBound)", section: .server, key: key)
                return nil
            }
            return n
        }
        let maximumSessions = serverInteger("max_sessions", 0...65535, "a number of sessions (0: no limit)")
        let maximumPerAddress = serverInteger("max_connections_per_address", 0...65535, "a number of connections (0: no limit)")
        let loginTimeout = serverInteger("login_timeout", 1...3600, "seconds")
        var unsolicitedBudget: Int?
        if let v = server?["max_unsolicited_bytes"] {
            let bytes = v.int.map { $0 >= 0 ? UInt64($0) : nil } ?? v.string.flatMap(parseSize)
            if let bytes, bytes == 0 || (UInt64(minimumUnsolicitedBudget)...(1 << 40)).contains(bytes) {
                unsolicitedBudget = Int(bytes)
            } else {
                issue("server.max_unsolicited_bytes",
                      "must be 0 (no limit) or bytes (or a size such as \"256MiB\") from 1MiB to 1TiB",
                      section: .server, key: "max_unsolicited_bytes")
            }
        }

        var targets: [TargetDefinition] = []
        var seenNames: Set<String> = []
        var seenFiles: [String: String] = [:]
        let targetArray = root["target"]?.array
        if root["target"] != nil && targetArray == nil { issue("target", "must be an array of tables ([[target]])") }
        if targetArray == nil || targetArray!.isEmpty { issue("target", "at least one [[target]] is required") }
        for (ti, element) in elements(targetArray).enumerated() {
            let tpath = "target[\(ti)]"
            let section = LineLocator.Section.target(ti)
            guard let t = element.table else {
                issue(tpath, "must be a table", section: section)
                continue
            }
            checkKeys(t, allowed: Self.knownKeys["target"]!,
                      path: tpath, section: section)
            var chap: CHAPAccount?
            if let value = t["chap"] {
                chap = parseCHAP(value, path: "\(tpath).chap", section: .targetTable(ti, "[target.chap]"))
            }
            let allowedInitiators = parseInitiatorNames(t, path: tpath, section: section)
            let name = t["name"]?.string ?? ""
            if name.isEmpty {
                issue("\(tpath).name", "required", section: section)
            } else if !isValidISCSIName(name) {
                issue("\(tpath).name", "\"\(name)\" is not an iSCSI name (iqn.YYYY-MM.domain[:id], eui.<16 hex>, naa.<hex>)",
                      section: section, key: "name")
            } else if !seenNames.insert(name.lowercased()).inserted {
                issue("\(tpath).name", "duplicate target name \"\(name)\"", section: section, key: "name")
            }
            var tpgt: UInt16 = 1
            if let v = t["portal_group"] {
                if let n = v.int, (1...65535).contains(n) { tpgt = UInt16(n) } else {
                    issue("\(tpath).portal_group", "must be an integer from 1 to 65535", section: section, key: "portal_group")
                }
            }
            var copyLimits = CopyLimits()
            if let value = t["copy"] {
                if let copy = value.table {
                    copyLimits = parseCopyLimits(copy, path: "\(tpath).copy", section: section)
                } else {
                    issue("\(tpath).copy", "must be a table", section: section, key: "copy")
                }
            }
            var tokenLimits = RODTokenLimits()
            if let value = t["tokens"] {
                if let tokens = value.table {
                    tokenLimits = parseTokenLimits(tokens, path: "\(tpath).tokens", section: section)
                } else {
                    issue("\(tpath).tokens", "must be a table", section: section, key: "tokens")
                }
            }
            var luns: [LUNDefinition] = []
            var seenLUNs: Set<UInt16> = []
            let lunArray = t["lun"]?.array
            if lunArray == nil || lunArray!.isEmpty { issue("\(tpath).lun", "at least one [[target.lun]] is required", section: section) }
            for (li, lunElement) in elements(lunArray).enumerated() {
                let lpath = "\(tpath).lun[\(li)]"
                let ls = LineLocator.Section.lun(ti, li)
                guard let l = lunElement.table else {
                    issue(lpath, "must be a table", section: ls)
                    continue
                }
                checkKeys(l, allowed: Self.knownKeys["target.lun"]!,
                          path: lpath, section: ls)
                var number: UInt16 = 0
                if let n = l["number"]?.int, (0...16383).contains(n) {
                    number = UInt16(n)
                    if !seenLUNs.insert(number).inserted { issue("\(lpath).number", "duplicate LUN \(n)", section: ls, key: "number") }
                } else {
                    issue("\(lpath).number", "required: an integer from 0 to 16383", section: ls, key: "number")
                }
                var blockSize = 512
                if let v = l["block_size"] {
                    if let n = v.int, [512, 1024, 2048, 4096].contains(n) { blockSize = n } else {
                        issue("\(lpath).block_size", "must be 512, 1024, 2048 or 4096", section: ls, key: "block_size")
                    }
                }
                var size: UInt64 = 0
                if let s = l["size"]?.string, let v = parseSize(s) {
                    size = v
                } else if let n = l["size"]?.int, n > 0 {
                    size = UInt64(n)
                } else {
                    issue("\(lpath).size", "required: bytes or a size such as \"1GiB\"", section: ls, key: "size")
                }
                if size > 0 && (size % UInt64(blockSize) != 0 || size < UInt64(blockSize)) {
                    issue("\(lpath).size", "must be a positive multiple of the block size (\(blockSize))", section: ls, key: "size")
                }
                var path = ""
                if let f = l["file"]?.string, !f.isEmpty {
                    path = f.hasPrefix("/") ? f : stateAbsolute + "/" + f
                    path = URL(fileURLWithPath: path).standardizedFileURL.path
                    if let other = seenFiles[path] {
                        issue("\(lpath).file", "backing file already used by \(other)", section: ls, key: "file")
                    } else {
                        seenFiles[path] = lpath
                    }
                } else {
                    issue("\(lpath).file", "required: a backing file path (relative to the state directory)", section: ls, key: "file")
                }
                var cache = CachePolicy.writeBack
                if let c = l["cache"] {
                    if let s = c.string, let p = CachePolicy(rawValue: s) { cache = p } else {
                        issue("\(lpath).cache", "must be \"write-back\" or \"write-through\"", section: ls, key: "cache")
                    }
                }
                func flag(_ key: String) -> Bool {
                    guard let v = l[key] else { return false }
                    guard let b = v.bool else {
                        issue("\(lpath).\(key)", "must be true or false", section: ls, key: key)
                        return false
                    }
                    return b
                }
                func text(_ key: String, max: Int) -> String? {
                    guard let v = l[key] else { return nil }
                    guard let s = v.string, s.utf8.count <= max, s.allSatisfy({ $0.isASCII && !$0.isNewline }) else {
                        issue("\(lpath).\(key)", "must be ASCII text of at most \(max) characters", section: ls, key: key)
                        return nil
                    }
                    return s
                }
                func integer(_ key: String, _ range: ClosedRange<Int>) -> Int? {
                    integerValue(l, key, range, path: lpath, section: ls)
                }
                var streams: StreamSettings?
                let maximumStreams = integer("max_streams", 0...64)
                let permanentStreams = integer("permanent_streams", 0...64)
                let optimalWrite = integer("optimal_stream_write_size", 0...65535)
                let granularity = integer("stream_granularity_size", 0...Int(UInt32.max))
                let writeStream32 = flag("write_stream_32")
                if maximumStreams == nil && (permanentStreams != nil || optimalWrite != nil || granularity != nil
                                             || l["write_stream_32"] != nil) {
                    issue("\(lpath).max_streams", "required with the other stream keys", section: ls, key: "max_streams")
                } else if let maximumStreams, maximumStreams > 0 {
                    if (permanentStreams ?? 0) > maximumStreams {
                        issue("\(lpath).permanent_streams", "must not exceed max_streams (\(maximumStreams))",
                              section: ls, key: "permanent_streams")
                    } else {
                        streams = StreamSettings(maximumStreams: UInt16(maximumStreams),
                                                 permanentStreams: UInt16(permanentStreams ?? 0),
                                                 optimalStreamWriteSize: UInt16(optimalWrite ?? 0),
                                                 streamGranularitySize: UInt32(granularity ?? 0),
                                                 writeStream32: writeStream32)
                    }
                }
                luns.append(LUNDefinition(
                    number: number, path: path, byteCount: size, blockSize: blockSize, cache: cache,
                    readOnly: flag("read_only"), thinProvisioned: flag("thin"), nonRotational: flag("non_rotational"),
                    vendor: text("vendor", max: 8), product: text("product", max: 16), serialNumber: text("serial", max: 64),
                    streams: streams))
                luns[luns.count - 1].removable = flag("removable")
                luns[luns.count - 1].readWrite32 = flag("read_write_32")
                luns[luns.count - 1].sanitizeSeconds = integer("sanitize_seconds", 0...3600) ?? 0
                luns[luns.count - 1].persistReservations = flag("persist_reservations")
                luns[luns.count - 1].allowedInitiators = parseInitiatorNames(l, path: lpath, section: ls)
                luns[luns.count - 1].flash = flashSettings(l, openUnits: Int(streams?.maximumStreams ?? 8),
                                                           blockCount: size / UInt64(blockSize), blockSize: blockSize,
                                                           integer: integer) { key, why in
                    issue("\(lpath).\(key)", why, section: ls, key: key)
                }
            }
            targets.append(TargetDefinition(name: name, alias: t["alias"]?.string, portalGroupTag: tpgt,
                                            luns: luns.sorted { $0.number < $1.number }))
            targets[targets.count - 1].copyLimits = copyLimits
            targets[targets.count - 1].tokenLimits = tokenLimits
            targets[targets.count - 1].chap = chap
            targets[targets.count - 1].allowedInitiators = allowedInitiators
        }
        if !issues.isEmpty {
            throw ConfigurationError(issues: issues.sorted { ($0.line ?? 0) < ($1.line ?? 0) }, source: source)
        }
        var configuration = ServerConfiguration(
            listenHost: listenHost, listenPort: listenPort, advertise: advertiseText, stateDirectory: stateAbsolute,
            targets: targets)
        configuration.commandWindow = window
        configuration.nopInterval = nop
        configuration.discoveryCHAP = discoveryCHAP
        if let maximumSessions { configuration.maximumSessions = maximumSessions }
        if let maximumPerAddress { configuration.maximumConnectionsPerAddress = maximumPerAddress }
        if let loginTimeout { configuration.loginTimeout = loginTimeout }
        if let unsolicitedBudget { configuration.maximumUnsolicitedBytes = unsolicitedBudget }
        configuration.metricsListen = metrics
        configuration.definitionText = toml
        configuration.definitionBaseDirectory = baseDirectory
        return configuration
    }
}

private func elements(_ array: TOMLArray?) -> [any TOMLValueConvertible] {
    guard let array else { return [] }
    var out: [any TOMLValueConvertible] = []
    for element in array { out.append(element) }
    return out
}

/// Finds the line of a key in the TOML source, by section (nth [[target]], nth [[target.lun]]).
struct LineLocator {
    enum Section {
        case root, server, target(Int), lun(Int, Int)
        /// A top-level table such as `[discovery.chap]`.
        case table(String)
        /// A sub-table of the nth target such as `[target.chap]`.
        case targetTable(Int, String)
    }
    let lines: [Substring]

    init(text: String) { lines = text.split(separator: "\n", omittingEmptySubsequences: false) }

    private func trimmed(_ i: Int) -> Substring { lines[i].drop(while: { $0 == " " || $0 == "\t" }) }

    /// The line range (0-based, half-open) of a section.
    private func range(_ section: Section) -> Range<Int>? {
        func headerLines(_ header: String) -> [Int] { lines.indices.filter { trimmed($0).hasPrefix(header) } }
        let allHeaders = lines.indices.filter { trimmed($0).hasPrefix("[") }
        func until(_ start: Int, stopAt: (Int) -> Bool) -> Range<Int> {
            var end = start + 1
            while end < lines.count && !stopAt(end) { end += 1 }
            return start..<end
        }
        switch section {
        case .root:
            return 0..<(allHeaders.first ?? lines.count)
        case .server:
            guard let s = headerLines("[server]").first else { return nil }
            return until(s) { allHeaders.contains($0) }
        case .table(let header):
            guard let s = headerLines(header).first else { return nil }
            return until(s) { allHeaders.contains($0) }
        case .targetTable(let t, let header):
            let targets = headerLines("[[target]]")
            guard t < targets.count else { return nil }
            let next = t + 1 < targets.count ? targets[t + 1] : lines.count
            guard let s = headerLines(header).first(where: { $0 > targets[t] && $0 < next }) else { return nil }
            return until(s) { allHeaders.contains($0) }
        case .target(let t):
            let targets = headerLines("[[target]]")
            guard t < targets.count else { return nil }
            return until(targets[t]) { allHeaders.contains($0) }
        case .lun(let t, let l):
            let targets = headerLines("[[target]]")
            guard t < targets.count else { return nil }
            let next = t + 1 < targets.count ? targets[t + 1] : lines.count
            let luns = headerLines("[[target.lun]]").filter { $0 > targets[t] && $0 < next }
            guard l < luns.count else { return nil }
            return until(luns[l]) { allHeaders.contains($0) }
        }
    }

    /// 1-based line of `key` in `section`, or of the section header.
    func line(section: Section, key: String?) -> Int? {
        guard let r = range(section) else { return nil }
        if let key {
            for i in r where trimmed(i).hasPrefix(key) {
                let rest = trimmed(i).dropFirst(key.count).drop(while: { $0 == " " })
                if rest.hasPrefix("=") { return i + 1 }
            }
        }
        if case .root = section { return nil }
        return r.lowerBound + 1
    }
}
