import Yams

/// Defences against hostile YAML that Yams would otherwise accept: aliases (billion laughs) and huge
/// node counts. It does not parse YAML; the lexical pass only finds `&anchor` / `*alias` tokens so that
/// an alias bomb is refused before Yams composes (and hashes) anything.
enum HostileInputGuard {
    static let maxNodesPerFile = 100_000

    struct Finding: Error {
        var message: String
        var line: Int
        var column: Int
    }

    static func aliasMessage(_ anchor: String) -> String { "YAML aliases are not supported (anchor \"\(anchor)\")" }

    /// Finds the first `*name` token whose `&name` appeared before it. Quoted text and comments are
    /// skipped; a token must start a node (line start, after whitespace or a flow indicator).
    static func lexicalAlias(in text: String) -> Finding? {
        // No `&`, no anchor, so no alias to find: the common case, and the scan below costs a tenth of
        // decoding a small manifest.
        guard text.utf8.contains(UInt8(ascii: "&")) else { return nil }
        var anchors: Set<Substring> = []
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Array(rawLine.unicodeScalars)
            var index = 0
            var quote: Unicode.Scalar?
            while index < line.count {
                let char = line[index]
                if let open = quote {
                    if char == open { quote = nil }
                    index += 1
                    continue
                }
                let previous: Unicode.Scalar = index == 0 ? " " : line[index - 1]
                let atTokenStart = previous == " " || previous == "\t" || "[{,".unicodeScalars.contains(previous)
                if char == "#" && atTokenStart { break }
                if (char == "\"" || char == "'") && atTokenStart {
                    quote = char
                    index += 1
                    continue
                }
                if (char == "&" || char == "*") && atTokenStart {
                    var end = index + 1
                    while end < line.count, !" \t\r,[]{}".unicodeScalars.contains(line[end]) { end += 1 }
                    let name = Substring(String(String.UnicodeScalarView(line[(index + 1)..<end])))
                    if !name.isEmpty {
                        if char == "&" {
                            anchors.insert(name)
                        } else if anchors.contains(name) {
                            return Finding(message: aliasMessage(String(name)), line: lineNumber, column: index + 1)
                        }
                    }
                    index = end
                    continue
                }
                index += 1
            }
        }
        return nil
    }

    /// Walks composed documents: an anchored node met a second time is an alias use (Yams resolves
    /// aliases to the anchor's node). Also caps the number of nodes visited.
    static func scan(_ documents: [Node]) -> Finding? {
        var seen: Set<ObjectIdentifier> = []
        var count = 0
        var stack = documents
        while let node = stack.popLast() {
            count += 1
            if count > maxNodesPerFile {
                return Finding(message: "file has more than \(maxNodesPerFile) YAML nodes",
                               line: node.mark?.line ?? 1, column: node.mark?.column ?? 1)
            }
            if let anchor = node.anchor, !seen.insert(ObjectIdentifier(anchor)).inserted {
                return Finding(message: aliasMessage(anchor.rawValue),
                               line: node.mark?.line ?? 1, column: node.mark?.column ?? 1)
            }
            switch node {
            case .mapping(let mapping):
                for (key, value) in mapping.reversed() {
                    stack.append(value)
                    stack.append(key)
                }
            case .sequence(let sequence):
                stack.append(contentsOf: sequence.reversed())
            case .alias(let alias):
                return Finding(message: aliasMessage(alias.anchor.rawValue),
                               line: alias.mark?.line ?? 1, column: alias.mark?.column ?? 1)
            case .scalar:
                break
            }
        }
        return nil
    }
}
