/// Why a resource or file was rejected; the raw value is used as a status condition reason.
///
/// A closed set on purpose: callers switch over it, and new reasons are a contract change.
public enum DiagnosticReason: String, Sendable, Codable, CaseIterable {
    /// YAML syntax error, file too large, aliases, too many nodes, a document that is not a mapping, or a
    /// path that could not be read (a symbolic link loop, a dangling link, a FIFO).
    case parseError = "ParseError"
    /// Unknown field, wrong type, out of range, missing required field.
    case invalidSpec = "InvalidSpec"
    /// A reference to a missing, wrong-kind or invalid resource.
    case missingReference = "MissingReference"
    case portConflict = "PortConflict"
    case quotaExceeded = "QuotaExceeded"
    case editionNotSupported = "EditionNotSupported"
    case backendProtocolMismatch = "BackendProtocolMismatch"
    case duplicateName = "DuplicateName"
}

/// One problem found in the manifests, with the most precise position known.
///
/// Diagnostics are always errors (there are no warnings), and they never contain secrets: the loader
/// never reads key material, and messages quote only manifest text.
public struct Diagnostic: Hashable, Sendable, CustomStringConvertible, Error {
    public var location: SourceLocation
    public var message: String
    public var reason: DiagnosticReason
    /// The resource it is reported against, when its kind and name could be read.
    public var resource: ResourceID?

    public init(location: SourceLocation, message: String, reason: DiagnosticReason, resource: ResourceID? = nil) {
        self.location = location
        self.message = message
        self.reason = reason
        self.resource = resource
    }

    /// `FILE:LINE:COL: error: MESSAGE`, the line `alb validate` prints.
    public var formatted: String { "\(location): error: \(message)" }

    public var description: String { formatted }
}
