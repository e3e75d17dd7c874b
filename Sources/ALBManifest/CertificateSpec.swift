/// A Server certificate comes with a private key; a CA certificate only verifies clients.
public enum CertificateType: String, Sendable, Codable, CaseIterable {
    case server = "Server"
    case ca = "CA"
}

/// A Certificate spec: file paths only, already resolved relative to the manifest's directory.
///
/// It never reads, parses or holds PEM contents (that is ALBTLS's job), so no key material can leak
/// through it, its canonical form or its diagnostics.
public struct CertificateSpec: Equatable, Sendable {
    public var type: CertificateType
    /// Path of the PEM chain file.
    public var certificate: String
    /// Path of the PEM key file; present for `Server`, absent for `CA`.
    public var privateKey: String?
    public init(type: CertificateType, certificate: String, privateKey: String? = nil) {
        self.type = type
        self.certificate = certificate
        self.privateKey = privateKey
    }
}
