import Dispatch
import Synchronization
import Yams

/// Decodes and validates a snapshot of manifest files: YAML -> resources with defaults, every problem
/// reported with file:line:col, per-resource and cross-resource rules applied.
///
/// It does no I/O (callers pass file contents), keeps no state between calls, and never stops at the
/// first problem.
public enum ManifestLoader {
    public static let maxFileBytes = 1 << 20

    public static func load(_ files: [ManifestFile]) -> ManifestSet {
        var cache = ManifestCache()
        return load(files, cache: &cache)
    }

    /// As `load(_:)`, reusing the decoded documents of files whose contents did not change since the
    /// call that filled `cache` (a reconcile pass after a one-file edit decodes one file).
    public static func load(_ files: [ManifestFile], cache: inout ManifestCache) -> ManifestSet {
        var set = ManifestSet()
        var documents: [DecodedDocument] = []
        var looseDiagnostics: [Diagnostic] = []
        var nextCache = ManifestCache()

        for (file, outcome) in zip(files, outcomes(of: files, cache: cache)) {
            nextCache.entries[file.path] = ManifestCache.Entry(contents: file.contents, readError: file.readError,
                                                          outcome: outcome)
            switch outcome {
            case .unparsable(let diagnostic):
                set.unparsableFiles[file.path] = diagnostic
                looseDiagnostics.append(diagnostic)
            case .documents(let decoded):
                for document in decoded {
                    if let id = document.id {
                        set.definedBy[file.path, default: []].insert(id)
                    } else {
                        looseDiagnostics.append(contentsOf: document.diagnostics)
                    }
                    if document.id.map({ !DocumentDecoder.isValidName($0.name) }) ?? true,
                       set.unidentifiedDocuments[file.path] == nil, let first = document.diagnostics.first {
                        set.unidentifiedDocuments[file.path] = first
                    }
                    documents.append(document)
                }
            }
        }
        cache = nextCache

        var validator = CrossResourceValidator(documents: documents.filter { $0.id != nil })
        validator.run()
        set.resources = validator.valid
        set.invalid = validator.invalid
        set.sources = validator.sources
        set.fieldSources = validator.locations
        let all = looseDiagnostics + validator.invalid.values.flatMap { $0 }
        set.diagnostics = all.sorted { lhs, rhs in
            lhs.location != rhs.location ? lhs.location < rhs.location : lhs.message < rhs.message
        }
        return set
    }

    /// Each file's outcome, in the order of `files`: from `cache` when its contents did not change,
    /// otherwise decoded. Files are independent and decoding is pure, so two or more to decode (a cold
    /// start decodes every file) are spread over the cores.
    static func outcomes(of files: [ManifestFile], cache: ManifestCache) -> [ManifestCache.Outcome] {
        let cached = files.map { cache.outcome(for: $0) }
        let missing = files.indices.filter { cached[$0] == nil }
        guard missing.count >= 2 else { return zip(files, cached).map { file, outcome in outcome ?? decode(file) } }
        let decoded = Mutex<[Int: ManifestCache.Outcome]>([:])
        DispatchQueue.concurrentPerform(iterations: missing.count) { slot in
            let index = missing[slot]
            let outcome = decode(files[index])
            decoded.withLock { $0[index] = outcome }
        }
        let fresh = decoded.withLock { $0 }
        return files.indices.map { index in cached[index] ?? fresh[index] ?? decode(files[index]) }
    }

    static func decode(_ file: ManifestFile) -> ManifestCache.Outcome {
        if let readError = file.readError {
            return .unparsable(Diagnostic(location: SourceLocation(file: file.path, line: 0, column: 0),
                                          message: readError, reason: .parseError))
        }
        switch parse(file) {
        case .failure(let diagnostic):
            return .unparsable(diagnostic)
        case .success(let roots):
            return .documents(roots.compactMap { DocumentDecoder.decode($0, file: file.path) })
        }
    }

    /// The documents of one file, or the file-level ParseError.
    static func parse(_ file: ManifestFile) -> Result<[Node], Diagnostic> {
        func failure(_ message: String, line: Int = 1, column: Int = 1) -> Result<[Node], Diagnostic> {
            .failure(Diagnostic(location: SourceLocation(file: file.path, line: line, column: column),
                                message: message, reason: .parseError))
        }
        let size = file.contents.utf8.count
        if size > maxFileBytes {
            return failure("file is too large (more than \(maxFileBytes) bytes)")
        }
        // A byte-order mark is not content (editors on Windows write one); libyaml refuses it in the
        // middle of a stream, and a String keeps it as a character. Lines and columns do not count it.
        var contents = file.contents
        if contents.unicodeScalars.first == "\u{FEFF}" {
            contents = String(contents.unicodeScalars.dropFirst())
        }
        if let finding = HostileInputGuard.lexicalAlias(in: contents) {
            return failure(finding.message, line: finding.line, column: finding.column)
        }
        var roots: [Node] = []
        do {
            // The parser owns the anchors nodes refer to (weakly): keep it alive while scanning.
            // Every plain scalar is a string here (`Resolver.basic`): the decoder reads scalars as text and
            // their quoting style, never Yams' tags, and the default resolver's regular expressions (compiled
            // with ICU on first use, then matched against every mapping key by Yams' duplicate-key check)
            // were a third of a cold start's decoding. Keys that only the tag told apart (`1` and `"1"`)
            // now count as the duplicates the decoder would have read them as.
            // The encoding is given because Yams' default reads it from the environment, which builds the
            // whole environment dictionary for every file parsed (2.5% of a 100-listener cold start's
            // reconciler CPU). UTF-8 is the default's own answer for a native Swift string.
            let parser = try Parser(yaml: contents, resolver: .basic, encoding: .utf8)
            while let root = try parser.nextRoot() { roots.append(root) }
            if let finding = HostileInputGuard.scan(roots) {
                return failure(finding.message, line: finding.line, column: finding.column)
            }
            withExtendedLifetime(parser) {}
        } catch let error as YamlError {
            let described = describe(error, in: contents)
            return failure(described.message, line: described.line, column: described.column)
        } catch {
            return failure("invalid YAML: \(error)")
        }
        return .success(roots)
    }

    /// A one-line message and position for a Yams error.
    static func describe(_ error: YamlError, in text: String) -> (message: String, line: Int, column: Int) {
        func withContext(_ problem: String, _ context: YamlError.Context?) -> String {
            guard let context else { return "invalid YAML: \(problem)" }
            return "invalid YAML: \(problem) (\(context.text) at \(context.mark.line):\(context.mark.column))"
        }
        switch error {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return (withContext(problem, context), mark.line, mark.column)
        case .reader(let problem, let offset, _, _):
            let position = offset.map { lineAndColumn(ofCharacterOffset: $0, in: text) } ?? (1, 1)
            return ("invalid YAML: \(problem)", position.0, position.1)
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.map { "\"\($0)\"" }.joined(separator: ", ")
            return ("duplicate mapping key \(keys)", context.mark.line, context.mark.column)
        default:
            return ("invalid YAML: \(error)", 1, 1)
        }
    }

    static func lineAndColumn(ofCharacterOffset offset: Int, in text: String) -> (Int, Int) {
        var line = 1
        var column = 1
        for (index, char) in text.enumerated() {
            if index >= offset { break }
            if char == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return (line, column)
    }
}

/// Per-file results of the last `load`, keyed by path and valid while the contents are byte-for-byte the
/// same. A plain value: the caller keeps it between loads.
public struct ManifestCache: Sendable {
    enum Outcome: Sendable {
        case unparsable(Diagnostic)
        case documents([DecodedDocument])
    }

    struct Entry: Sendable {
        var contents: String
        var readError: String?
        var outcome: Outcome
    }

    var entries: [String: Entry] = [:]

    public init() {}

    func outcome(for file: ManifestFile) -> Outcome? {
        guard let entry = entries[file.path], entry.contents == file.contents, entry.readError == file.readError
        else { return nil }
        return entry.outcome
    }
}
