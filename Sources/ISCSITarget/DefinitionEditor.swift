//
// Edits of a target definition's text that keep what a person wrote: comments, blank lines,
// indentation and key order. Runtime changes (`iscsi-target lun add`, `lun remove`, `tokens`)
// are made to the running definition's text with these edits and then parsed by the same
// parser as the file, so a change is checked exactly as the file would be; `iscsi-target save`
// writes the text back.
//
// The editor understands the layout this project's definitions use: a `[[target]]` header,
// the target's keys, then its sub-tables (`[target.tokens]`, `[[target.lun]]`, …) up to the
// next header that does not begin with `[target.` or `[[target.`.
//
import Foundation

public struct DefinitionEditError: Error, CustomStringConvertible, Equatable {
    public var description: String
}

public struct DefinitionEditor: Sendable {
    public private(set) var lines: [String]

    public init(text: String) {
        var lines = text.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        self.lines = lines
    }

    public var text: String { self.lines.joined(separator: "\n") + "\n" }

    // MARK: Reading the layout

    private static func trimmed(_ line: String) -> Substring {
        line.drop(while: { $0 == " " || $0 == "\t" })
    }

    /// The header of a table line (`[x]` or `[[x]]`, without brackets), or nil.
    private static func header(_ line: String) -> (name: String, array: Bool)? {
        let t = trimmed(line)
        guard t.hasPrefix("[") else { return nil }
        let array = t.hasPrefix("[[")
        let open = array ? 2 : 1
        guard let close = t.firstIndex(of: "]") else { return nil }
        let name = t[t.index(t.startIndex, offsetBy: open)..<close].trimmingCharacters(in: .whitespaces)
        return (name, array)
    }

    private static func isCommentOrBlank(_ line: String) -> Bool {
        let t = trimmed(line)
        return t.isEmpty || t.hasPrefix("#")
    }

    /// The value text of `key = value` on this line, or nil.
    private static func keyValue(_ line: String) -> (key: String, value: String)? {
        let t = trimmed(line)
        guard !t.hasPrefix("#"), !t.hasPrefix("["), let equals = t.firstIndex(of: "=") else { return nil }
        let key = t[..<equals].trimmingCharacters(in: .whitespaces)
        var value = t[t.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        if !value.hasPrefix("\""), let hash = value.firstIndex(of: "#") {
            value = value[..<hash].trimmingCharacters(in: .whitespaces)
        } else if value.hasPrefix("\""), let end = value.dropFirst().firstIndex(of: "\"") {
            value = String(value[...end])
        }
        return (key, value)
    }

    /// Lines [start, end) of the `[[target]]` whose name is `name`.
    private func targetBlock(_ name: String) throws(DefinitionEditError) -> Range<Int> {
        var i = 0
        while i < self.lines.count {
            if let h = Self.header(self.lines[i]), h.array, h.name == "target" {
                var end = i + 1
                while end < self.lines.count {
                    if let next = Self.header(self.lines[end]),
                       !(next.name.hasPrefix("target.")) || (next.array && next.name == "target") {
                        break
                    }
                    end += 1
                }
                // The target's own keys come before its first sub-table.
                var j = i + 1
                while j < end, Self.header(self.lines[j]) == nil {
                    if let kv = Self.keyValue(self.lines[j]), kv.key == "name",
                       Self.unquote(kv.value)?.lowercased() == name.lowercased() {
                        return i..<end
                    }
                    j += 1
                }
                i = end
            } else {
                i += 1
            }
        }
        throw DefinitionEditError(description: "the definition has no target named \(name)")
    }

    /// Sub-tables of a target block: header line, end (exclusive), name and whether an array table.
    private func subTables(in block: Range<Int>) -> [(start: Int, end: Int, name: String, array: Bool)] {
        var tables: [(start: Int, end: Int, name: String, array: Bool)] = []
        for i in block.dropFirst() {
            if let h = Self.header(self.lines[i]) {
                if !tables.isEmpty { tables[tables.count - 1].end = i }
                tables.append((i, block.upperBound, h.name, h.array))
            }
        }
        return tables
    }

    private static func unquote(_ value: String) -> String? {
        guard value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") else { return nil }
        return String(value.dropFirst().dropLast())
    }

    /// The last line of `range` that holds a key, a header or a value (not blank, not a comment).
    private func lastContentLine(in range: Range<Int>) -> Int? {
        range.reversed().first { !Self.isCommentOrBlank(self.lines[$0]) }
    }

    private func indentation(of line: Int) -> String {
        String(self.lines[line].prefix(while: { $0 == " " || $0 == "\t" }))
    }

    // MARK: Edits

    /// Appends a `[[target.lun]]` table with `keys` (TOML `key = value` pairs, in order) after
    /// the last line of target `target`, indented like the target's other LU tables.
    public mutating func addLUN(target: String, keys: [(String, String)]) throws(DefinitionEditError) {
        let block = try self.targetBlock(target)
        let luns = self.subTables(in: block).filter { $0.array && $0.name == "target.lun" }
        let indent = luns.last.map { self.indentation(of: $0.start) } ?? "  "
        let keyIndent = luns.last.flatMap { lun in
            ((lun.start + 1)..<lun.end).first { Self.keyValue(self.lines[$0]) != nil }.map { self.indentation(of: $0) }
        } ?? indent
        let after = self.lastContentLine(in: block) ?? block.lowerBound
        var table = ["", indent + "[[target.lun]]"]
        table += keys.map { keyIndent + "\($0.0) = \($0.1)" }
        self.lines.insert(contentsOf: table, at: after + 1)
    }

    /// Removes the `[[target.lun]]` table of target `target` whose `number` is `lun`, with the
    /// comment lines right above its header; comments and blank lines after its last key stay
    /// (they usually introduce what follows).
    public mutating func removeLUN(target: String, lun: UInt16) throws(DefinitionEditError) {
        let block = try self.targetBlock(target)
        let table = self.subTables(in: block).first { table in
            table.array && table.name == "target.lun"
                && ((table.start + 1)..<table.end).contains { Self.keyValue(self.lines[$0]).map { $0.key == "number" && Int($0.value) == Int(lun) } ?? false }
        }
        guard let table else { throw DefinitionEditError(description: "target \(target) has no LUN \(lun) in its definition") }
        var start = table.start
        while start > block.lowerBound + 1, Self.trimmed(self.lines[start - 1]).hasPrefix("#") { start -= 1 }
        var end = (self.lastContentLine(in: table.start..<table.end) ?? table.start) + 1
        // One blank line before the table goes with it, so that no double blank remains.
        if start > 0, Self.trimmed(self.lines[start - 1]).isEmpty { start -= 1 } else if end < self.lines.count,
            Self.trimmed(self.lines[end]).isEmpty { end += 1 }
        self.lines.removeSubrange(start..<end)
    }

    /// Sets keys of target `target`'s `[target.tokens]` table (creating the table at the end of
    /// the target when it has none). A key already there keeps its line, indentation and
    /// trailing comment; only its value changes.
    public mutating func setTokenKeys(target: String, _ keys: [(String, String)]) throws(DefinitionEditError) {
        var block = try self.targetBlock(target)
        var table = self.subTables(in: block).first { !$0.array && $0.name == "target.tokens" }
        if table == nil {
            let after = self.lastContentLine(in: block) ?? block.lowerBound
            let indent = self.subTables(in: block).first.map { self.indentation(of: $0.start) } ?? "  "
            self.lines.insert(contentsOf: ["", indent + "[target.tokens]"], at: after + 1)
            block = try self.targetBlock(target)
            table = self.subTables(in: block).first { !$0.array && $0.name == "target.tokens" }
        }
        guard var table else { throw DefinitionEditError(description: "cannot place [target.tokens] for \(target)") }
        for (key, value) in keys {
            if let line = ((table.start + 1)..<table.end).first(where: { Self.keyValue(self.lines[$0])?.key == key }) {
                self.lines[line] = Self.replacingValue(in: self.lines[line], with: value)
            } else {
                let last = self.lastContentLine(in: table.start..<table.end) ?? table.start
                let indent = last == table.start ? self.indentation(of: table.start) : self.indentation(of: last)
                self.lines.insert(indent + "\(key) = \(value)", at: last + 1)
                table.end += 1
            }
        }
    }

    /// `key = old  # note` with `old` replaced by `value`, keeping the padding before a comment.
    private static func replacingValue(in line: String, with value: String) -> String {
        guard let equals = line.firstIndex(of: "="), let old = keyValue(line)?.value else { return line }
        let prefixEnd = line.index(after: equals)
        let rest = line[prefixEnd...]
        guard let range = rest.range(of: old) else { return line }
        let oldWidth = old.count
        var suffix = String(rest[range.upperBound...])
        // Keep a trailing comment in its column where the new value leaves room.
        if suffix.hasPrefix(" "), suffix.contains("#") {
            let spaces = suffix.prefix(while: { $0 == " " }).count
            let wanted = max(1, spaces + oldWidth - value.count)
            suffix = String(repeating: " ", count: wanted) + suffix.drop(while: { $0 == " " })
        }
        return String(line[..<prefixEnd]) + String(rest[..<range.lowerBound]) + value + suffix
    }
}
