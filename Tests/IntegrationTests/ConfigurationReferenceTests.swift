// Docs/configuration.md (with the [target.copy] table of Docs/copy-offload.md) is the
// configuration reference: checked here against the keys the parser accepts, both ways.

import Foundation
import ISCSITarget
import Testing

@Suite("The configuration reference matches the parser")
struct ConfigurationReferenceTests {
    static func repositoryFile(_ path: String) throws -> String {
        let root = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    /// Keys shown in the ```toml blocks of `text`, by table ("chap" for both CHAP tables).
    static func documentedKeys(_ text: String) -> [String: Set<String>] {
        var keys: [String: Set<String>] = [:]
        var inBlock = false
        var table = ""
        let assignment = #/^\s*([a-z0-9_]+)\s*=/#
        let alternative = #/\#\s*or\s+([a-z0-9_]+)\s*=/#
        for line in text.components(separatedBy: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("```") {
                inBlock = trimmed == "```toml"
                table = ""
                continue
            }
            guard inBlock else { continue }
            if trimmed.hasPrefix("[") {
                let name = trimmed.prefix { $0 != "#" }.trimmingCharacters(in: CharacterSet(charactersIn: "[] "))
                table = name.hasSuffix(".chap") ? "chap" : name
                continue
            }
            if let match = line.firstMatch(of: assignment) { keys[table, default: []].insert(String(match.1)) }
            if let match = line.firstMatch(of: alternative) { keys[table, default: []].insert(String(match.1)) }
        }
        return keys
    }

    @Test("every key the parser accepts is documented, and every documented key is accepted")
    func bothWays() throws {
        var documented = Self.documentedKeys(try Self.repositoryFile("Docs/configuration.md"))
        for (table, keys) in Self.documentedKeys(try Self.repositoryFile("Docs/copy-offload.md")) where table == "target.copy" {
            documented[table, default: []].formUnion(keys)
        }
        let subtables: Set<String> = ["lun", "copy", "tokens", "chap", "discovery", "server", "target"]
        for (table, known) in ServerConfiguration.knownKeys where !table.isEmpty && table != "discovery" {
            let shown = documented[table] ?? []
            #expect(shown.subtracting(known).isEmpty, "documented in [\(table)] but not accepted: \(shown.subtracting(known).sorted())")
            let missing = known.subtracting(subtables).subtracting(shown)
            #expect(missing.isEmpty, "accepted in [\(table)] but not documented: \(missing.sorted())")
        }
        #expect(Set(documented.keys).subtracting(ServerConfiguration.knownKeys.keys).subtracting([""]).isEmpty,
                "tables documented that the parser does not know: \(documented.keys.sorted())")
    }

    @Test("the reference's own examples parse without an unknown key")
    func examplesParse() throws {
        for file in ["Docs/configuration.md", "Docs/copy-offload.md"] {
            let text = try Self.repositoryFile(file)
            var blocks: [String] = []
            var current: [String]?
            for line in text.components(separatedBy: "\n") {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed == "```toml" { current = []; continue }
                if trimmed.hasPrefix("```"), let block = current { blocks.append(block.joined(separator: "\n")); current = nil; continue }
                current?.append(line)
            }
            for block in blocks {
                do {
                    _ = try ServerConfiguration.parse(toml: block)
                } catch let error as ConfigurationError {
                    let unknown = error.issues.filter { $0.message == "unknown key" }
                    #expect(unknown.isEmpty, "\(file): \(unknown)")
                }
            }
        }
    }
}
