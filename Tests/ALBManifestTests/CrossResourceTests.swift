import XCTest
@testable import ALBManifest

final class CrossResourceTests: XCTestCase {
    private func listenerFile(_ spec: String, name: String = "web") -> (String, String) {
        ("l.yaml", Fixture.doc("Listener", name, spec))
    }

    private let httpsSpec = "loadBalancer: lb\nprotocol: HTTPS\nport: 443\ncertificates: {server: srv}\n"
        + "defaultAction: {forwardGroup: {serverGroups: [{name: blue}]}}"

    func testDuplicateNamesAcrossFiles() {
        let set = load(("a.yaml", Fixture.doc("ServerGroup", "blue", "{}")))
        let id = ResourceID(kind: .serverGroup, name: "blue")
        assertDiagnostics(set, [
            "a.yaml:4:9: error: metadata.name: duplicate ServerGroup name \"blue\" (also defined at base.yaml:7:1)",
            "base.yaml:10:9: error: metadata.name: duplicate ServerGroup name \"blue\" (also defined at a.yaml:1:1)",
        ])
        XCTAssertTrue(set.diagnostics.allSatisfy { $0.reason == .duplicateName && $0.resource == id })
        XCTAssertNil(set.resources[id])
        XCTAssertEqual(set.invalid[id]?.count, 2)
        XCTAssertEqual(set.definedBy["a.yaml"], [id])
        // The same name in another kind is fine.
        assertDiagnostics(load(("b.yaml", Fixture.doc("Listener", "blue", Fixture.listenerSpec()))), [])
    }

    func testMissingWrongKindAndInvalidReferences() {
        let spec = """
        loadBalancer: blue
        protocol: HTTP
        port: 80
        defaultAction: {forwardGroup: {serverGroups: [{name: green}, {name: bad}]}}
        """
        let set = load(listenerFile(spec), ("g.yaml", Fixture.doc("ServerGroup", "bad", "scheduler: x")))
        let web = ResourceID(kind: .listener, name: "web")
        assertDiagnostics(set, [
            "g.yaml:6:14: error: spec.scheduler: \"x\" is not one of Wrr, Wlc, Sch",
            "l.yaml:6:17: error: spec.loadBalancer: \"blue\" is a ServerGroup, not a LoadBalancer",
            "l.yaml:9:56: error: spec.defaultAction.forwardGroup.serverGroups[0].name: ServerGroup \"green\" does not exist",
            "l.yaml:9:71: error: spec.defaultAction.forwardGroup.serverGroups[1].name: ServerGroup \"bad\" is invalid",
        ])
        XCTAssertEqual(set.invalid[web]?.map(\.reason), [.missingReference, .missingReference, .missingReference])
        XCTAssertNil(set.resources[web])
    }

    func testHTTPSNeedsServerCertificateOfTheRightType() {
        let set = load(listenerFile(httpsSpec.replacingOccurrences(of: "{server: srv}", with: "{additional: [ca]}")))
        assertOnly(set, "l.yaml:9:17: error: missing required field \"spec.certificates.server\"", reason: .invalidSpec)
        let wrongType = load(listenerFile(httpsSpec.replacingOccurrences(of: "{server: srv}", with: "{server: ca, additional: [srv, ca]}")
                                          + "\nmutualAuthentication: {enabled: true, ca: srv}"))
        assertDiagnostics(wrongType, [
            "l.yaml:9:26: error: spec.certificates.server: Certificate \"ca\" has type CA, expected Server",
            "l.yaml:9:48: error: spec.certificates.additional[1]: Certificate \"ca\" has type CA, expected Server",
            "l.yaml:11:45: error: spec.mutualAuthentication.ca: Certificate \"srv\" has type Server, expected CA",
        ])
        assertDiagnostics(load(listenerFile(httpsSpec + "\nmutualAuthentication: {enabled: true, ca: ca}")), [])
    }

    func testAtMost25AdditionalCertificates() {
        let names = Array(repeating: "srv", count: 26).joined(separator: ", ")
        let set = load(listenerFile(httpsSpec.replacingOccurrences(of: "{server: srv}", with: "{server: srv, additional: [\(names)]}")))
        assertOnly(set, "l.yaml:9:43: error: spec.certificates.additional: 26 certificates exceed the limit of 25",
                   reason: .invalidSpec)
    }

    func testPortConflicts() {
        let text = Fixture.doc("Listener", "a", Fixture.listenerSpec(port: 80)) + "---\n"
            + Fixture.doc("Listener", "b", Fixture.listenerSpec(port: 80)) + "---\n"
            + Fixture.doc("Listener", "c", Fixture.listenerSpec(port: 80, protocol: "HTTPS", "certificates: {server: srv}"))
        let set = load(("l.yaml", text))
        assertDiagnostics(set, [
            "l.yaml:8:9: error: spec.port: port 80 conflicts with Listener \"b\" (HTTP) on LoadBalancer \"lb\"",
            "l.yaml:8:9: error: spec.port: port 80 conflicts with Listener \"c\" (HTTPS) on LoadBalancer \"lb\"",
            "l.yaml:18:9: error: spec.port: port 80 conflicts with Listener \"a\" (HTTP) on LoadBalancer \"lb\"",
            "l.yaml:18:9: error: spec.port: port 80 conflicts with Listener \"c\" (HTTPS) on LoadBalancer \"lb\"",
            "l.yaml:28:9: error: spec.port: port 80 conflicts with Listener \"a\" (HTTP) on LoadBalancer \"lb\"",
            "l.yaml:28:9: error: spec.port: port 80 conflicts with Listener \"b\" (HTTP) on LoadBalancer \"lb\"",
        ])
        XCTAssertTrue(set.diagnostics.allSatisfy { $0.reason == .portConflict })
    }

    /// Two LoadBalancers with one address share its ports: a listener each on 80 could not both bind. The base's
    /// `lb` listens on 0.0.0.0 (the default); `other` on 0.0.0.0 too, `elsewhere` on 127.0.0.2.
    func testListenersOfLoadBalancersWithTheSameAddressConflict() {
        let text = Fixture.doc("LoadBalancer", "other", "address: 0.0.0.0") + "---\n"
            + Fixture.doc("LoadBalancer", "elsewhere", "address: 127.0.0.2") + "---\n"
            + Fixture.doc("Listener", "a", Fixture.listenerSpec(port: 80)) + "---\n"
            + Fixture.doc("Listener", "b", Fixture.listenerSpec(port: 80).replacingOccurrences(of: "lb", with: "other"))
            + "---\n"
            + Fixture.doc("Listener", "c", Fixture.listenerSpec(port: 80).replacingOccurrences(of: "lb", with: "elsewhere"))
            + "---\n"
            + Fixture.doc("Listener", "q", Fixture.listenerSpec(port: 80, protocol: "QUIC", "certificates: {server: srv}")
                .replacingOccurrences(of: "lb", with: "other"))
        let set = load(("l.yaml", text))
        assertDiagnostics(set, [
            "l.yaml:22:9: error: spec.port: port 80 conflicts with Listener \"b\" (HTTP) on LoadBalancer \"other\", "
                + "which has the same address 0.0.0.0",
            "l.yaml:32:9: error: spec.port: port 80 conflicts with Listener \"a\" (HTTP) on LoadBalancer \"lb\", "
                + "which has the same address 0.0.0.0",
        ])
        XCTAssertTrue(set.diagnostics.allSatisfy { $0.reason == .portConflict })
        XCTAssertNotNil(set.resources[ResourceID(kind: .listener, name: "c")], "another address: no conflict")
        XCTAssertNotNil(set.resources[ResourceID(kind: .listener, name: "q")], "QUIC is UDP: no conflict")
    }

    func testQUICAndHTTPSMayShareAPortAndUpgradeLinksThem() {
        let text = Fixture.doc("Listener", "q", Fixture.listenerSpec(port: 443, protocol: "QUIC", "certificates: {server: srv}"))
            + "---\n" + Fixture.doc("Listener", "web", httpsSpec + "\nquicUpgrade: {enabled: true, listener: q}")
        let set = load(("l.yaml", text))
        assertDiagnostics(set, [])
        XCTAssertEqual(listener(set)?.quicUpgrade, QUICUpgrade(enabled: true, listener: "q"))
    }

    func testQUICUpgradeTargetMustBeAQUICListenerOnTheSameInstance() {
        let other = Fixture.doc("LoadBalancer", "lb2", "{}") + "---\n"
            + Fixture.doc("Listener", "q2", Fixture.listenerSpec(port: 443, protocol: "QUIC", "certificates: {server: srv}")
                .replacingOccurrences(of: "loadBalancer: lb", with: "loadBalancer: lb2"))
        let text = Fixture.doc("Listener", "web", httpsSpec + "\nquicUpgrade: {enabled: true, listener: q2}") + "---\n"
            + Fixture.doc("Listener", "web2", httpsSpec.replacingOccurrences(of: "443", with: "8443")
                          + "\nquicUpgrade: {enabled: true, listener: h}") + "---\n"
            + Fixture.doc("Listener", "h", Fixture.listenerSpec())
        let set = load(("l.yaml", text), ("o.yaml", other))
        assertDiagnostics(set, [
            "l.yaml:11:42: error: spec.quicUpgrade.listener: Listener \"q2\" is on LoadBalancer \"lb2\", not \"lb\"",
            "l.yaml:23:42: error: spec.quicUpgrade.listener: Listener \"h\" is HTTP, not QUIC",
        ])
    }

    func testListenerQuotaRejectsListenersBeyondItInNameOrder() {
        let lb = Fixture.doc("LoadBalancer", "small", "quotas: {listeners: 1}")
        let text = ["b", "a", "c"].enumerated().map { index, name in
            Fixture.doc("Listener", name, Fixture.listenerSpec(port: 80 + index).replacingOccurrences(of: "lb", with: "small"))
        }.joined(separator: "---\n")
        let set = load(("lb.yaml", lb), ("l.yaml", text))
        assertDiagnostics(set, [
            "l.yaml:6:17: error: spec.loadBalancer: LoadBalancer \"small\" has more listeners than its quota of 1 (quotas.listeners)",
            "l.yaml:26:17: error: spec.loadBalancer: LoadBalancer \"small\" has more listeners than its quota of 1 (quotas.listeners)",
        ])
        XCTAssertEqual(set.diagnostics.map(\.resource?.name), ["b", "c"])
        XCTAssertTrue(set.diagnostics.allSatisfy { $0.reason == .quotaExceeded })
        XCTAssertNotNil(set.resources[ResourceID(kind: .listener, name: "a")])
    }

    func testListenerTimeoutsAreBoundedByTheirInstance() {
        let set = load(listenerFile(Fixture.listenerSpec("idleTimeout: 601\nrequestTimeout: 600")))
        assertOnly(set, "l.yaml:10:16: error: spec.idleTimeout: 601 is out of range 1-600 (quotas.maxIdleTimeout of LoadBalancer \"lb\")",
                   reason: .invalidSpec)
        let upgraded = Fixture.doc("LoadBalancer", "lb", "upgraded: true\nquotas: {maxIdleTimeout: 3600, maxRequestTimeout: 3600}")
        let ok = load(("lb.yaml", upgraded), ("g.yaml", Fixture.doc("ServerGroup", "blue", "{}")),
                      listenerFile(Fixture.listenerSpec("idleTimeout: 3600\nrequestTimeout: 3600")), withBase: false)
        assertDiagnostics(ok, [])
        assertDiagnostics(load(listenerFile(Fixture.listenerSpec("requestTimeout: 3601"))),
                          ["l.yaml:10:19: error: spec.requestTimeout: 3601 is out of range 1-3600"])
    }

    func testEditionNotSupportedOnBasic() {
        let basic = Fixture.doc("LoadBalancer", "lb", "edition: Basic") + "---\n"
            + Fixture.doc("SecurityPolicy", "custom", "tlsVersions: [TLSv1.2]\nciphers: [ECDHE-RSA-AES128-GCM-SHA256]")
            + "---\n" + Fixture.doc("ServerGroup", "blue", "{}") + "---\n"
            + Fixture.doc("Certificate", "srv", "{type: Server, certificate: a.pem, privateKey: a.key}") + "---\n"
            + Fixture.doc("Certificate", "ca", "{type: CA, certificate: ca.pem}")
        let spec = httpsSpec + "\nclientIp: {enabled: true}\nmutualAuthentication: {enabled: true, ca: ca}\nsecurityPolicy: custom"
        let set = load(("lb.yaml", basic), listenerFile(spec), withBase: false)
        assertDiagnostics(set, [
            "l.yaml:11:23: error: spec.clientIp.enabled: not supported on Basic edition (LoadBalancer \"lb\")",
            "l.yaml:12:35: error: spec.mutualAuthentication.enabled: not supported on Basic edition (LoadBalancer \"lb\")",
            "l.yaml:13:19: error: spec.securityPolicy: custom security policies are not supported on Basic edition "
                + "(LoadBalancer \"lb\")",
        ])
        XCTAssertTrue(set.diagnostics.allSatisfy { $0.reason == .editionNotSupported })
        let predefined = load(("lb.yaml", basic), listenerFile(httpsSpec + "\nsecurityPolicy: tls_cipher_policy_1_2_strict"),
                              withBase: false)
        assertDiagnostics(predefined, [])
    }

    func testSecurityPolicyReferences() {
        let set = load(listenerFile(httpsSpec + "\nsecurityPolicy: strict"))
        assertOnly(set, "l.yaml:11:19: error: spec.securityPolicy: SecurityPolicy \"strict\" does not exist",
                   reason: .missingReference)
        let policy = Fixture.doc("SecurityPolicy", "strict", "tlsVersions: [TLSv1.2, TLSv1.3]\nciphers: [TLS_AES_128_GCM_SHA256]")
        assertDiagnostics(load(("p.yaml", policy), listenerFile(httpsSpec + "\nsecurityPolicy: strict")), [])
    }

    func testBackendProtocols() {
        let groups = Fixture.doc("ServerGroup", "tls", "protocol: HTTPS") + "---\n" + Fixture.doc("ServerGroup", "rpc", "protocol: gRPC")
        let http = Fixture.listenerSpec().replacingOccurrences(of: "[{name: blue}]", with: "[{name: tls}, {name: rpc}]")
        assertOnly(load(("g.yaml", groups), listenerFile(http)),
                   "l.yaml:9:69: error: spec.defaultAction.forwardGroup.serverGroups[1].name: HTTP listeners cannot forward to "
                   + "gRPC server group \"rpc\"", reason: .backendProtocolMismatch)
        let quic = Fixture.listenerSpec(protocol: "QUIC", "certificates: {server: srv}")
            .replacingOccurrences(of: "[{name: blue}]", with: "[{name: tls}]")
        assertOnly(load(("g.yaml", groups), listenerFile(quic)),
                   "l.yaml:9:56: error: spec.defaultAction.forwardGroup.serverGroups[0].name: QUIC listeners cannot forward to "
                   + "HTTPS server group \"tls\"", reason: .backendProtocolMismatch)
        let https = httpsSpec.replacingOccurrences(of: "[{name: blue}]", with: "[{name: tls}, {name: rpc}]")
        assertDiagnostics(load(("g.yaml", groups), listenerFile(https)), [])
        assertOnly(load(("g.yaml", groups), listenerFile(https + "\nhttp2: false")),
                   "l.yaml:10:69: error: spec.defaultAction.forwardGroup.serverGroups[1].name: gRPC server group \"rpc\" "
                   + "requires http2: true", reason: .backendProtocolMismatch)
    }

    func testForwardGroupMustNotBeEmpty() {
        let spec = Fixture.listenerSpec().replacingOccurrences(of: "[{name: blue}]", with: "[]")
        assertOnly(load(listenerFile(spec)),
                   "l.yaml:9:48: error: spec.defaultAction.forwardGroup.serverGroups: must not be empty", reason: .invalidSpec)
    }

    func testListenerOnInvalidListenerThroughQUICUpgrade() {
        let text = Fixture.doc("Listener", "q", Fixture.listenerSpec(port: 443, protocol: "QUIC", "certificates: {server: nope}"))
            + "---\n" + Fixture.doc("Listener", "web", httpsSpec + "\nquicUpgrade: {enabled: true, listener: q}")
        let set = load(("l.yaml", text))
        assertDiagnostics(set, [
            "l.yaml:10:26: error: spec.certificates.server: Certificate \"nope\" does not exist",
            "l.yaml:22:42: error: spec.quicUpgrade.listener: Listener \"q\" is invalid",
        ])
        XCTAssertEqual(Set(set.invalid.keys), [ResourceID(kind: .listener, name: "q"), ResourceID(kind: .listener, name: "web")])
    }
}
