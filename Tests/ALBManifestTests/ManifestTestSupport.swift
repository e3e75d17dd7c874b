import XCTest
@testable import ALBManifest

/// Shared fixtures: `base.yaml` holds a LoadBalancer `lb`, an HTTP ServerGroup `blue`, a Server
/// certificate `srv` and a CA certificate `ca`; tests add one file of their own.
enum Fixture {
    static let base = """
    apiVersion: alb/v1
    kind: LoadBalancer
    metadata:
      name: lb
    spec: {}
    ---
    apiVersion: alb/v1
    kind: ServerGroup
    metadata:
      name: blue
    spec:
      servers: [{address: 127.0.0.1, port: 9000}]
    ---
    apiVersion: alb/v1
    kind: Certificate
    metadata:
      name: srv
    spec: {type: Server, certificate: certs/srv.pem, privateKey: certs/srv.key}
    ---
    apiVersion: alb/v1
    kind: Certificate
    metadata:
      name: ca
    spec: {type: CA, certificate: /etc/ca.pem}
    """

    /// A document whose `spec:` is on line 5, so spec line k is file line 5 + k, column 3.
    static func doc(_ kind: String, _ name: String, _ spec: String) -> String {
        let body = spec.split(separator: "\n", omittingEmptySubsequences: false).map { "  \($0)" }
            .joined(separator: "\n")
        return "apiVersion: alb/v1\nkind: \(kind)\nmetadata:\n  name: \(name)\nspec:\n\(body)\n"
    }

    /// A valid HTTP listener spec on port 80 plus `extra` lines.
    static func listenerSpec(port: Int = 80, protocol proto: String = "HTTP", _ extra: String = "") -> String {
        var lines = ["loadBalancer: lb", "protocol: \(proto)", "port: \(port)",
                     "defaultAction: {forwardGroup: {serverGroups: [{name: blue}]}}"]
        if !extra.isEmpty { lines.append(extra) }
        return lines.joined(separator: "\n")
    }
}

extension XCTestCase {
    func load(_ files: (String, String)..., withBase: Bool = true) -> ManifestSet {
        var list = files.map { ManifestFile(path: $0.0, contents: $0.1) }
        if withBase { list.insert(ManifestFile(path: "base.yaml", contents: Fixture.base), at: 0) }
        return ManifestLoader.load(list)
    }

    /// Asserts the exact formatted diagnostics, in order.
    func assertDiagnostics(_ set: ManifestSet, _ expected: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(set.diagnostics.map(\.formatted), expected, file: file, line: line)
    }

    func assertOnly(_ set: ManifestSet, _ expected: String, reason: DiagnosticReason,
                    file: StaticString = #filePath, line: UInt = #line) {
        assertDiagnostics(set, [expected], file: file, line: line)
        XCTAssertEqual(set.diagnostics.first?.reason, reason, file: file, line: line)
    }

    func listener(_ set: ManifestSet, _ name: String = "web") -> ListenerSpec? {
        guard case .listener(let spec)? = set.resources[ResourceID(kind: .listener, name: name)]?.spec else { return nil }
        return spec
    }
}
