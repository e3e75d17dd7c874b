import XCTest
@testable import ALBManifest

final class DecodingTests: XCTestCase {
    func testBaseFixtureIsValidWithDefaults() throws {
        let set = load()
        assertDiagnostics(set, [])
        XCTAssertEqual(set.resources.count, 4)
        let lb = try XCTUnwrap(set.resources[ResourceID(kind: .loadBalancer, name: "lb")])
        XCTAssertEqual(lb.spec, .loadBalancer(LoadBalancerSpec()))
        XCTAssertEqual(lb.source, SourceLocation(file: "base.yaml", line: 1, column: 1))
        guard case .serverGroup(let group)? = set.resources[ResourceID(kind: .serverGroup, name: "blue")]?.spec else {
            return XCTFail("no group")
        }
        XCTAssertEqual(group.protocol, .http)
        XCTAssertEqual(group.scheduler, .wrr)
        XCTAssertEqual(group.servers, [BackendServer(address: "127.0.0.1", port: 9000, weight: 100)])
        XCTAssertEqual(group.healthCheck.codes, ["http_2xx", "http_3xx"])
        XCTAssertEqual(group.healthCheck.method, .head)
        XCTAssertEqual(group.stickySession.cookieTimeout, 1000)
        XCTAssertEqual(set.sources[ResourceID(kind: .certificate, name: "srv")]?.description, "base.yaml:14:1")
        XCTAssertEqual(set.definedBy["base.yaml"]?.count, 4)
    }

    func testListenerDefaults() throws {
        let set = load(("l.yaml", Fixture.doc("Listener", "web", Fixture.listenerSpec())))
        assertDiagnostics(set, [])
        let spec = try XCTUnwrap(listener(set))
        XCTAssertEqual(spec.state, .running)
        XCTAssertTrue(spec.http2)
        XCTAssertEqual(spec.idleTimeout, 15)
        XCTAssertEqual(spec.requestTimeout, 60)
        XCTAssertFalse(spec.compression)
        XCTAssertTrue(spec.headers.xForwardedFor)
        XCTAssertFalse(spec.headers.slbId)
        XCTAssertEqual(spec.securityPolicy, "tls_cipher_policy_1_0")
        XCTAssertEqual(spec.defaultAction.forwardGroup.serverGroups, [WeightedServerGroup(name: "blue", weight: 100)])
        XCTAssertEqual(set.resources[ResourceID(kind: .listener, name: "web")]?.source.description, "l.yaml:1:1")
    }

    func testCertificatePathsResolveRelativeToManifest() throws {
        let set = ManifestLoader.load([ManifestFile(path: "manifests/tls/base.yaml", contents: Fixture.base)])
        guard case .certificate(let srv)? = set.resources[ResourceID(kind: .certificate, name: "srv")]?.spec,
              case .certificate(let ca)? = set.resources[ResourceID(kind: .certificate, name: "ca")]?.spec else {
            return XCTFail("missing certificates")
        }
        XCTAssertEqual(srv.certificate, "manifests/tls/certs/srv.pem")
        XCTAssertEqual(srv.privateKey, "manifests/tls/certs/srv.key")
        XCTAssertEqual(ca.certificate, "/etc/ca.pem")
        XCTAssertEqual(ManifestPath.resolve("../x.pem", relativeTo: "a/b/m.yaml"), "a/x.pem")
        XCTAssertEqual(ManifestPath.resolve("./x.pem", relativeTo: "m.yaml"), "x.pem")
        XCTAssertEqual(ManifestPath.resolve("x.pem", relativeTo: "/srv/m.yaml"), "/srv/x.pem")
    }

    func testMultiDocumentFileAndEmptyDocuments() {
        let text = "---\n---\n" + Fixture.doc("ServerGroup", "a", "{}") + "---\n" + Fixture.doc("ServerGroup", "b", "{}")
        let set = load(("g.yaml", text), withBase: false)
        assertDiagnostics(set, [])
        XCTAssertEqual(set.definedBy["g.yaml"], [ResourceID(kind: .serverGroup, name: "a"),
                                                 ResourceID(kind: .serverGroup, name: "b")])
        XCTAssertEqual(set.sources[ResourceID(kind: .serverGroup, name: "b")]?.line, 10)
    }

    func testUnknownFieldsAtEveryLevel() {
        let text = """
        apiVersion: alb/v1
        kind: ServerGroup
        colour: red
        metadata:
          name: g
          labels: {}
        spec:
          healthCheck: {enabled: true, foo: 1}
        """
        let set = load(("g.yaml", text), withBase: false)
        assertDiagnostics(set, [
            "g.yaml:3:1: error: unknown field \"colour\"",
            "g.yaml:6:3: error: unknown field \"metadata.labels\"",
            "g.yaml:8:32: error: unknown field \"spec.healthCheck.foo\"",
        ])
        XCTAssertEqual(set.invalid[ResourceID(kind: .serverGroup, name: "g")]?.count, 3)
        XCTAssertTrue(set.resources.isEmpty)
        XCTAssertTrue(set.diagnostics.allSatisfy { $0.reason == .invalidSpec })
    }

    func testWrongTypesAreReportedAtTheValue() {
        let spec = """
        loadBalancer: lb
        protocol: HTTP
        port: abc
        http2: yes
        compression: "true"
        idleTimeout: 1.5
        headers: [x]
        defaultAction: {forwardGroup: {serverGroups: [{name: blue, weight: "5"}]}}
        """
        let set = load(("l.yaml", Fixture.doc("Listener", "web", spec)))
        assertDiagnostics(set, [
            "l.yaml:8:9: error: spec.port: expected an integer, got \"abc\"",
            "l.yaml:9:10: error: spec.http2: expected a boolean (true or false), got \"yes\"",
            "l.yaml:10:16: error: spec.compression: expected a boolean (true or false), got \"true\"",
            "l.yaml:11:16: error: spec.idleTimeout: expected an integer, got \"1.5\"",
            "l.yaml:12:12: error: spec.headers: expected a mapping, got a list",
            "l.yaml:13:70: error: spec.defaultAction.forwardGroup.serverGroups[0].weight: expected an integer, got \"5\"",
        ])
    }

    func testOutOfRangeAndEnums() {
        let spec = """
        loadBalancer: lb
        protocol: TCP
        port: 70000
        state: Paused
        defaultAction: {forwardGroup: {serverGroups: [{name: blue, weight: 101}]}}
        """
        let set = load(("l.yaml", Fixture.doc("Listener", "web", spec)))
        assertDiagnostics(set, [
            "l.yaml:7:13: error: spec.protocol: \"TCP\" is not one of HTTP, HTTPS, QUIC",
            "l.yaml:8:9: error: spec.port: 70000 is out of range 1-65535",
            "l.yaml:9:10: error: spec.state: \"Paused\" is not one of Running, Stopped",
            "l.yaml:10:70: error: spec.defaultAction.forwardGroup.serverGroups[0].weight: 101 is out of range 0-100",
        ])
    }

    func testMissingRequiredFields() {
        let set = load(("l.yaml", "apiVersion: alb/v1\nkind: Listener\nmetadata:\n  name: web\nspec:\n  port: 80\n"),
                       withBase: false)
        assertDiagnostics(set, [
            "l.yaml:6:3: error: missing required field \"spec.defaultAction\"",
            "l.yaml:6:3: error: missing required field \"spec.loadBalancer\"",
            "l.yaml:6:3: error: missing required field \"spec.protocol\"",
        ])
        let bare = load(("x.yaml", "kind: Widget\nmetadata: {}\n"), withBase: false)
        assertDiagnostics(bare, [
            "x.yaml:1:1: error: missing required field \"apiVersion\"",
            "x.yaml:1:1: error: missing required field \"spec\"",
            "x.yaml:1:7: error: kind: \"Widget\" is not one of LoadBalancer, Listener, ServerGroup, Certificate, SecurityPolicy",
            "x.yaml:2:11: error: missing required field \"metadata.name\"",
        ])
        XCTAssertTrue(bare.invalid.isEmpty)
        XCTAssertNil(bare.diagnostics[0].resource)
    }

    func testApiVersionNameAndTags() {
        let tags = (1...21).map { "t\($0): v" }.joined(separator: ", ")
        let text = "apiVersion: v2\nkind: ServerGroup\nmetadata:\n  name: Web_1\n  tags: {\(tags)}\nspec: {}\n"
        let set = load(("g.yaml", text), withBase: false)
        assertDiagnostics(set, [
            "g.yaml:1:13: error: apiVersion: expected \"alb/v1\", got \"v2\"",
            "g.yaml:4:9: error: metadata.name: \"Web_1\" must be 1-63 characters of a-z, 0-9 and \"-\", "
                + "starting and ending with a letter or digit",
            "g.yaml:5:9: error: metadata.tags: 21 tags exceed the limit of 20",
        ])
        XCTAssertNotNil(set.invalid[ResourceID(kind: .serverGroup, name: "Web_1")])
        XCTAssertFalse(DocumentDecoder.isValidName("-a"))
        XCTAssertFalse(DocumentDecoder.isValidName(String(repeating: "a", count: 64)))
        XCTAssertTrue(DocumentDecoder.isValidName("a-1"))
    }

    func testTagsAreStringToString() {
        let text = "apiVersion: alb/v1\nkind: ServerGroup\nmetadata:\n  name: g\n  tags: {team: web, n: [1]}\nspec: {}\n"
        assertDiagnostics(load(("g.yaml", text), withBase: false),
                          ["g.yaml:5:24: error: metadata.tags.n: expected a string, got a list"])
    }

    func testDocumentMustBeAMapping() {
        let set = load(("x.yaml", "- a\n- b\n---\n" + Fixture.doc("ServerGroup", "g", "{}")), withBase: false)
        assertOnly(set, "x.yaml:1:1: error: document must be a mapping, got a list", reason: .parseError)
        XCTAssertEqual(set.resources.count, 1)
        XCTAssertTrue(set.unparsableFiles.isEmpty)
    }

    func testServerGroupRules() {
        let spec = """
        protocol: gRPC
        servers:
          - {address: "bad host!", port: 0, weight: 101}
          - {address: "::1", port: 80}
          - {address: backend.internal, port: 80}
          - {port: 80}
        healthCheck: {path: health, codes: [http_600], interval: 51, healthyThreshold: 1}
        stickySession: {type: Server, cookieTimeout: 0}
        """
        let set = load(("g.yaml", Fixture.doc("ServerGroup", "g", spec)), withBase: false)
        assertDiagnostics(set, [
            "g.yaml:8:17: error: spec.servers[0].address: \"bad host!\" is not an IP address or host name",
            "g.yaml:8:36: error: spec.servers[0].port: 0 is out of range 1-65535",
            "g.yaml:8:47: error: spec.servers[0].weight: 101 is out of range 0-100",
            "g.yaml:11:7: error: missing required field \"spec.servers[3].address\"",
            "g.yaml:12:23: error: spec.healthCheck.path: \"health\" must start with \"/\"",
            "g.yaml:12:39: error: spec.healthCheck.codes[0]: \"http_600\" is not one of http_2xx, http_3xx, http_4xx, http_5xx",
            "g.yaml:12:60: error: spec.healthCheck.interval: 51 is out of range 1-50",
            "g.yaml:12:82: error: spec.healthCheck.healthyThreshold: 1 is out of range 2-10",
            "g.yaml:13:25: error: spec.stickySession.type: \"Server\" is not one of Insert",
            "g.yaml:13:48: error: spec.stickySession.cookieTimeout: 0 is out of range 1-86400",
        ])
    }

    func testCertificateRules() {
        let text = Fixture.doc("Certificate", "a", "{type: Server, certificate: a.pem}") + "---\n"
            + Fixture.doc("Certificate", "b", "{type: CA, certificate: \"\", privateKey: k.pem}")
        assertDiagnostics(load(("c.yaml", text), withBase: false), [
            "c.yaml:6:3: error: missing required field \"spec.privateKey\"",
            "c.yaml:13:27: error: spec.certificate: must not be empty",
            "c.yaml:13:43: error: spec.privateKey: only for Server certificates",
        ])
    }

    /// The PEM pasted in place of a path: refused, and the key is repeated by no message (nor kept anywhere, so no
    /// status file, `alb plan` or error names it as a path).
    func testAPEMPastedForAPathIsRefusedWithoutShowingIt() {
        let key = "-----BEGIN PRIVATE KEY-----\n    MIIEvAIBADANBgkqhkiG9w0BAQEFAASC\n    -----END PRIVATE KEY-----"
        let text = Fixture.doc("Certificate", "c", "type: Server\ncertificate: c.pem\nprivateKey: |\n    \(key)")
            + "---\n" + Fixture.doc("Certificate", "d", "{type: Server, certificate: c.pem, privateKey: \"MIIE\(String(repeating: "A", count: 1600))\"}")
        let result = load(("c.yaml", text), withBase: false)
        assertDiagnostics(result, [
            "c.yaml:8:15: error: spec.privateKey: must be the path of a PEM file, not its content (the value is not shown: it may be a private key)",
            "c.yaml:18:50: error: spec.privateKey: must be the path of a PEM file, not its content (the value is not shown: it may be a private key)",
        ])
        XCTAssertFalse(result.diagnostics.contains { $0.description.contains("MIIE") })
    }

    /// A document whose kind or name cannot be read marks its file, so the reconciler keeps what the file defined
    /// before (a typo must not delete a resource); a valid file, or one whose problems are in `spec`, is not marked.
    func testFilesWithADocumentThatCannotBeIdentifiedAreMarked() {
        let set = load(("kind.yaml", Fixture.doc("Listnr", "a", "{}")),
                       ("name.yaml", Fixture.doc("Certificate", "Bad_Name", "{type: CA, certificate: a.pem}")),
                       ("spec.yaml", Fixture.doc("Certificate", "ok", "{type: CA, certificate: \"\"}")))
        XCTAssertEqual(Set(set.unidentifiedDocuments.keys), ["kind.yaml", "name.yaml"])
        XCTAssertTrue(set.unidentifiedDocuments["kind.yaml"]?.message.contains("Listnr") ?? false)
    }

    func testSecurityPolicyRules() {
        let text = Fixture.doc("SecurityPolicy", "p", "tlsVersions: [TLSv1.2, SSLv3]\nciphers: [AES128-SHA, RC4-MD5]")
            + "---\n" + Fixture.doc("SecurityPolicy", "q", "tlsVersions: []\nciphers: []")
        assertDiagnostics(load(("p.yaml", text), withBase: false), [
            "p.yaml:6:26: error: spec.tlsVersions[1]: \"SSLv3\" is not one of TLSv1.0, TLSv1.1, TLSv1.2, TLSv1.3",
            "p.yaml:7:25: error: spec.ciphers[1]: unknown cipher \"RC4-MD5\"",
            "p.yaml:14:16: error: spec.tlsVersions: must not be empty",
            "p.yaml:15:12: error: spec.ciphers: must not be empty",
        ])
    }

    func testLoadBalancerRules() {
        let text = Fixture.doc("LoadBalancer", "a", "edition: Basic\naddress: example.com\nquotas: {listeners: 81, maxIdleTimeout: 901}")
            + "---\n" + Fixture.doc("LoadBalancer", "b", "upgraded: true\nquotas: {listeners: 100, maxRequestTimeout: 3600}")
        assertDiagnostics(load(("lb.yaml", text), withBase: false), [
            "lb.yaml:7:12: error: spec.address: \"example.com\" is not an IP address",
            "lb.yaml:8:23: error: spec.quotas.listeners: 81 is out of range 1-80",
            "lb.yaml:8:43: error: spec.quotas.maxIdleTimeout: 901 is out of range 1-900",
        ])
    }

    func testListenerProtocolOnlyFields() {
        let extra = """
        http2: true
        securityPolicy: tls_cipher_policy_1_2
        mutualAuthentication: {enabled: true, ca: ca}
        quicUpgrade: {enabled: true, listener: q}
        clientIp: {enabled: true, trustedProxies: [10.0.0.0/8, 10.0.0.1/33]}
        """
        let set = load(("l.yaml", Fixture.doc("Listener", "web", Fixture.listenerSpec(extra))))
        assertDiagnostics(set, [
            "l.yaml:10:10: error: spec.http2: only for HTTPS listeners",
            "l.yaml:11:19: error: spec.securityPolicy: only for HTTPS listeners",
            "l.yaml:12:35: error: spec.mutualAuthentication.enabled: only for HTTPS listeners",
            "l.yaml:13:26: error: spec.quicUpgrade.enabled: only for HTTPS listeners",
            "l.yaml:14:58: error: spec.clientIp.trustedProxies[1]: \"10.0.0.1/33\" is not an IP address or CIDR",
        ])
        let quic = load(("q.yaml", Fixture.doc("Listener", "q", Fixture.listenerSpec(protocol: "QUIC", "clientIp: {enabled: true}"))))
        assertDiagnostics(quic, [
            "q.yaml:6:3: error: missing required field \"spec.certificates.server\"",
            "q.yaml:10:23: error: spec.clientIp.enabled: not supported on QUIC listeners",
        ])
    }

    func testSeveralDocumentsAndFilesReportedAtOnce() {
        let set = load(("a.yaml", Fixture.doc("Listener", "a", Fixture.listenerSpec(port: 0))),
                       ("b.yaml", Fixture.doc("ServerGroup", "b", "scheduler: Rr")))
        assertDiagnostics(set, [
            "a.yaml:8:9: error: spec.port: 0 is out of range 1-65535",
            "b.yaml:6:14: error: spec.scheduler: \"Rr\" is not one of Wrr, Wlc, Sch",
        ])
        XCTAssertEqual(set.diagnostics.map(\.resource), [ResourceID(kind: .listener, name: "a"),
                                                         ResourceID(kind: .serverGroup, name: "b")])
        XCTAssertEqual(set.resources.count, 4)
    }
}
