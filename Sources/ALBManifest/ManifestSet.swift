/// Everything the loader learned from one snapshot of manifest files.
///
/// A resource is either in `resources` (valid) or in `invalid`, never both. Files that failed to parse
/// contribute nothing but their entry in `unparsableFiles`, so callers can keep those files' last good
/// resources instead of deleting them. It holds no file contents and no key material.
public struct ManifestSet: Sendable {
    /// Every valid resource.
    public var resources: [ResourceID: Resource]
    /// Resources whose kind and name were read but that are invalid (including duplicates and
    /// cross-resource rule breakers), with the problems reported against them.
    public var invalid: [ResourceID: [Diagnostic]]
    /// Every problem, sorted by file, line, column.
    public var diagnostics: [Diagnostic]
    /// File path -> its parse error (YAML syntax, too large, aliases, too many nodes), or why the path
    /// could not be read (``ManifestFile/readError``).
    public var unparsableFiles: [String: Diagnostic]
    /// File path -> ids its documents define (valid or invalid).
    public var definedBy: [String: Set<ResourceID>]
    /// File path -> the first problem of a document in it whose identity could not be read: no known `kind`, no
    /// `metadata.name`, or a name that is no valid name (a typo in it). Which resource such a document meant is
    /// unknown, so callers keep what the file defined at its last good read, as for an unparsable file: a typo
    /// in `kind: Listener` must not delete the listener.
    public var unidentifiedDocuments: [String: Diagnostic] = [:]
    /// Where each (valid or invalid) resource is defined; for duplicates, the first copy.
    public var sources: [ResourceID: SourceLocation]
    /// Where each field of each resource is, by path (`spec.privateKey`, `spec.servers[0].port`).
    public var fieldSources: [ResourceID: [String: SourceLocation]] = [:]

    public init(resources: [ResourceID: Resource] = [:], invalid: [ResourceID: [Diagnostic]] = [:],
                diagnostics: [Diagnostic] = [], unparsableFiles: [String: Diagnostic] = [:],
                definedBy: [String: Set<ResourceID>] = [:], sources: [ResourceID: SourceLocation] = [:]) {
        self.resources = resources
        self.invalid = invalid
        self.diagnostics = diagnostics
        self.unparsableFiles = unparsableFiles
        self.definedBy = definedBy
        self.sources = sources
    }

    /// Files whose resources stay as they were at the file's last good read, with why: those that do not parse and
    /// those with a document that cannot be identified (the parse error first).
    public var filesNotWhollyRead: [String: Diagnostic] {
        self.unparsableFiles.merging(self.unidentifiedDocuments) { parseError, _ in parseError }
    }

    /// Where a field of a resource is, or the resource itself when the field is not in its manifest.
    public func source(of id: ResourceID, field path: String) -> SourceLocation? {
        self.fieldSources[id]?[path] ?? self.sources[id]
    }

    /// True when nothing at all was reported.
    public var isValid: Bool { diagnostics.isEmpty }
}
