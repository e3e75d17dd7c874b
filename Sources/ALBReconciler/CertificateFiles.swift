import ALBManifest
import ALBTLS
import Foundation

/// The certificate material a pass serves: every Certificate resource's files read and checked.
///
/// The only place that reads certificate and key files. Each pass reads them again (they are small), so a
/// rotated PEM, even outside the manifest directory, is picked up by the next pass (the watcher's, or
/// the periodic rescan). Errors name the file and the problem; key bytes never reach a message.
public struct CertificateFiles: Sendable {
    public enum Loaded: Sendable {
        case server(ServerCertificate, digest: String)
        case ca(CABundle, digest: String)
        case problem(CertificateProblem)
    }

    public private(set) var byName: [String: Loaded] = [:]

    public init() {}

    /// Largest certificate or key file read; a bigger one is an error, not a memory spike.
    static let maxFileBytes = 1 << 20

    public static func load(_ resources: [ResourceID: Resource], now: Date = Date()) -> CertificateFiles {
        var files = CertificateFiles()
        for (id, resource) in resources where id.kind == .certificate {
            guard case .certificate(let spec) = resource.spec else { continue }
            files.byName[id.name] = load(name: id.name, spec: spec, now: now)
        }
        return files
    }

    static func load(name: String, spec: CertificateSpec, now: Date) -> Loaded {
        let chain: [UInt8]
        switch read(spec.certificate) {
        case .success(let bytes): chain = bytes
        case .failure(let problem): return .problem(problem)
        }
        switch spec.type {
        case .ca:
            do {
                return .ca(try CABundle(name: name, pem: chain), digest: Reconciler.digest(bytes: chain))
            } catch let problem as CertificateProblem {
                return .problem(CertificateProblem("\(spec.certificate): \(problem.message)"))
            } catch {
                return .problem(CertificateProblem("\(spec.certificate): \(error)"))
            }
        case .server:
            guard let keyPath = spec.privateKey else {
                return .problem(CertificateProblem("no private key file", file: .privateKey))
            }
            let key: [UInt8]
            switch read(keyPath) {
            case .success(let bytes): key = bytes
            case .failure(let problem): return .problem(CertificateProblem(problem.message, file: .privateKey))
            }
            do {
                let certificate = try ServerCertificate(name: name, chainPEM: chain, keyPEM: key, now: now)
                return .server(certificate, digest: Reconciler.digest(bytes: chain + key))
            } catch let problem as CertificateProblem {
                return .problem(problem)
            } catch {
                return .problem(CertificateProblem("the certificate cannot be used"))
            }
        }
    }

    /// The file's bytes, read as a manifest is (``ManifestDirectory/readRegularFile(_:limit:)``): a FIFO or a
    /// device named as a certificate once hung `alb validate` and every reconcile pass, SIGTERM included.
    static func read(_ path: String) -> Result<[UInt8], CertificateProblem> {
        switch ManifestDirectory.readRegularFile(path, limit: maxFileBytes + 1) {
        case nil:
            return .failure(CertificateProblem("\(path) does not exist"))
        case .failure(let problem):
            return .failure(CertificateProblem("\(path) cannot be read: \(problem.message)"))
        case .success(let bytes) where bytes.count > maxFileBytes:
            return .failure(CertificateProblem("\(path) is larger than \(maxFileBytes) bytes"))
        case .success(let bytes):
            return .success(bytes)
        }
    }
}

/// What `alb validate` says about TLS beyond the manifests themselves: certificate files that cannot be
/// served (errors) and the parts of a listener's security policy BoringSSL cannot enforce (warnings).
public struct TLSFindings: Sendable {
    public var errors: [String] = []
    public var warnings: [String] = []

    public static func check(_ manifests: ManifestSet, now: Date = Date()) -> TLSFindings {
        var findings = TLSFindings()
        let files = CertificateFiles.load(manifests.resources, now: now)
        func source(_ id: ResourceID) -> String { manifests.sources[id]?.description ?? id.description }
        for (name, loaded) in files.byName.sorted(by: { $0.key < $1.key }) {
            if case .problem(let problem) = loaded {
                // At the field naming the file the problem is in.
                let id = ResourceID(kind: .certificate, name: name)
                let field = problem.file == .privateKey ? "spec.privateKey" : "spec.certificate"
                let at = manifests.source(of: id, field: field)?.description ?? source(id)
                findings.errors.append("\(at): error: certificate \"\(name)\": \(problem.message)")
            }
        }
        let state = DesiredState(resources: manifests.resources)
        for (id, resource) in manifests.resources.sorted(by: { $0.key < $1.key }) {
            guard case .listener(let spec) = resource.spec, spec.protocol == .https,
                  let policy = state.tlsPolicy(spec) else { continue }
            for limitation in policy.limitations {
                findings.warnings.append("\(source(id)): warning: security policy \(spec.securityPolicy): \(limitation)")
            }
        }
        return findings
    }
}
