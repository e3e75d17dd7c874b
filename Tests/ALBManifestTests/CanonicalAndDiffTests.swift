import XCTest
import Yams
@testable import ALBManifest

final class CanonicalAndDiffTests: XCTestCase {
    private func canonicalListener(_ extra: String = "", port: Int = 80) throws -> CanonicalFields {
        let text = "apiVersion: alb/v1\nkind: Listener\nmetadata:\n  name: web\n  tags: {team: web, app.io/tier: edge}\n"
            + "spec:\n" + Fixture.listenerSpec(port: port, extra).split(separator: "\n").map { "  \($0)" }.joined(separator: "\n")
        let set = load(("l.yaml", text))
        XCTAssertEqual(set.diagnostics, [])
        return try XCTUnwrap(set.resources[ResourceID(kind: .listener, name: "web")]).canonical
    }

    func testListenerCanonicalFieldsAreDefaultedAndFlat() throws {
        let fields = try canonicalListener("clientIp: {enabled: true, trustedProxies: [10.0.0.0/8]}")
        XCTAssertEqual(fields["port"], "80")
        XCTAssertEqual(fields["protocol"], "HTTP")
        XCTAssertEqual(fields["loadBalancer"], "lb")
        XCTAssertEqual(fields["idleTimeout"], "15")
        XCTAssertEqual(fields["headers.xForwardedFor"], "true")
        XCTAssertEqual(fields["securityPolicy"], "tls_cipher_policy_1_0")
        XCTAssertEqual(fields["clientIp.trustedProxies[0]"], "10.0.0.0/8")
        XCTAssertEqual(fields["defaultAction.forwardGroup.serverGroups[0].name"], "blue")
        XCTAssertEqual(fields["defaultAction.forwardGroup.serverGroups[0].weight"], "100")
        XCTAssertEqual(fields["tags.team"], "web")
        XCTAssertEqual(fields["tags.app.io/tier"], "edge")
        XCTAssertNil(fields["certificates.server"])
        XCTAssertEqual(fields.entries.first?.path, "loadBalancer")
    }

    func testCertificateCanonicalHoldsPathsOnly() {
        let set = load()
        let fields = set.resources[ResourceID(kind: .certificate, name: "srv")]?.canonical
        XCTAssertEqual(fields?.entries.map(\.path), ["type", "certificate", "privateKey"])
        XCTAssertEqual(fields?["privateKey"], "certs/srv.key")
    }

    func testCanonicalRoundTripThroughYAML() throws {
        for resource in load(("l.yaml", Fixture.doc("Listener", "web", Fixture.listenerSpec("description: \"8080\"")))).resources.values {
            let fields = resource.canonical
            let yaml = try Yams.dump(object: fields.nested)
            let back = CanonicalFields(nested: try XCTUnwrap(try Yams.load(yaml: yaml)))
            XCTAssertEqual(back, fields, "\(resource.id)\n\(yaml)")
        }
        let group = CanonicalFields(entries: (0..<12).map { (path: "servers[\($0)].port", value: "\($0)") })
        let back = CanonicalFields(nested: try XCTUnwrap(try Yams.load(yaml: try Yams.dump(object: group.nested))))
        XCTAssertEqual(back.entries.map(\.path), group.entries.map(\.path), "natural order of indices")
    }

    func testCanonicalFromNativeYAMLTypes() {
        let fields = CanonicalFields(nested: ["port": 80, "http2": true, "tags": ["a.b": "c"], "list": [1, 2]] as [String: Any])
        XCTAssertEqual(fields, CanonicalFields(entries: [("port", "80"), ("http2", "true"), ("tags.a.b", "c"),
                                                         ("list[0]", "1"), ("list[1]", "2")]))
    }

    /// The nested form takes paths apart byte by byte: keys, indices (several digits, lists in lists), and
    /// tag keys with dots in them, each where its path says.
    func testNestedFormOfListsInListsAndDottedTags() throws {
        let fields = CanonicalFields(entries: [
            ("rules[10].actions[0].name", "ten"), ("rules[2].actions[1][0]", "inner"), ("tags.team.name", "web"),
            ("ünïcode.key", "välue"), ("port", "80"),
        ], scalarTypes: ["port": .integer])
        let nested = fields.nested
        let rules = try XCTUnwrap(nested["rules"] as? [Any])
        XCTAssertEqual(rules.count, 11)
        let ten = try XCTUnwrap((rules[10] as? [String: Any])?["actions"] as? [Any])
        XCTAssertEqual((ten.first as? [String: Any])?["name"] as? String, "ten")
        let two = try XCTUnwrap((rules[2] as? [String: Any])?["actions"] as? [Any])
        XCTAssertEqual((two[1] as? [Any])?.first as? String, "inner")
        XCTAssertEqual((nested["tags"] as? [String: Any])?["team.name"] as? String, "web")
        XCTAssertEqual((nested["ünïcode"] as? [String: Any])?["key"] as? String, "välue")
        guard case .map(let pairs) = fields.typedTree,
              case .integer(80)? = pairs.first(where: { $0.key == "port" })?.value
        else { return XCTFail("port is typed as a number: \(fields.typedTree)") }
        XCTAssertEqual(CanonicalFields(nested: nested), fields, "the nested form flattens back to the same entries")
    }

    func testJSONQuotingEscapesOnlyWhatJSONNeeds() {
        var out = ""
        JSONValue.quote("plain ünïcode", into: &out)
        XCTAssertEqual(out, "\"plain ünïcode\"")
        out = ""
        JSONValue.quote("a\"b\\c\nd\re\tf\u{1}g\u{1f}", into: &out)
        XCTAssertEqual(out, #""a\"b\\c\nd\re\tf\u0001g\u001f""#)
        out = ""
        JSONValue.quote("", into: &out)
        XCTAssertEqual(out, "\"\"")
    }

    func testDifferCreateUpdateReplaceDeleteAndNoChange() throws {
        let base = try canonicalListener()
        let moved = try canonicalListener(port: 8080)
        let tuned = try canonicalListener("idleTimeout: 30")
        let web = ResourceID(kind: .listener, name: "web")
        let other = ResourceID(kind: .listener, name: "other")
        let group = ResourceID(kind: .serverGroup, name: "blue")
        let lb = ResourceID(kind: .loadBalancer, name: "lb")

        XCTAssertEqual(Differ.diff(desired: [web: base], live: [web: base]), [])
        XCTAssertEqual(Differ.diff(desired: [web: base], live: [:]), [.create(web)])
        XCTAssertEqual(Differ.diff(desired: [:], live: [web: base]), [.delete(web)])
        XCTAssertEqual(Differ.diff(desired: [web: tuned], live: [web: base]),
                       [.update(web, [FieldChange(path: "idleTimeout", old: "15", new: "30")])])
        XCTAssertEqual(Differ.diff(desired: [web: moved], live: [web: base]),
                       [.replace(web, immutableFields: ["port"], [FieldChange(path: "port", old: "80", new: "8080")])])

        var bound = base
        bound.entries.append((path: "bindAddress", value: "127.0.0.1"))
        var rebound = base
        rebound.entries.append((path: "bindAddress", value: "0.0.0.0"))
        XCTAssertEqual(Differ.diff(desired: [web: rebound], live: [web: bound]),
                       [.replace(web, immutableFields: ["bindAddress"],
                                 [FieldChange(path: "bindAddress", old: "127.0.0.1", new: "0.0.0.0")])])

        // Only listeners have immutable fields; results are sorted by id.
        let groupOld = CanonicalFields(entries: [("protocol", "HTTP"), ("servers[0].port", "80")])
        let groupNew = CanonicalFields(entries: [("protocol", "HTTPS")])
        let diffs = Differ.diff(desired: [web: base, group: groupNew, lb: CanonicalFields(entries: [])],
                                live: [other: base, group: groupOld])
        XCTAssertEqual(diffs, [
            .create(lb),
            .delete(other),
            .create(web),
            .update(group, [FieldChange(path: "protocol", old: "HTTP", new: "HTTPS"),
                            FieldChange(path: "servers[0].port", old: "80", new: nil)]),
        ])
    }

    func testKindOrderAndDescriptions() {
        XCTAssertEqual(ResourceKind.allCases.sorted(), [.loadBalancer, .listener, .serverGroup, .certificate, .securityPolicy])
        XCTAssertEqual(ResourceKind.securityPolicy.statusFolder, "securitypolicies")
        XCTAssertEqual(ResourceID(kind: .listener, name: "web").description, "Listener/web")
        XCTAssertEqual(Diagnostic(location: SourceLocation(file: "a.yaml", line: 2, column: 3), message: "m",
                                  reason: .invalidSpec).formatted, "a.yaml:2:3: error: m")
    }

    func testAddressSyntax() {
        for valid in ["10.0.0.1", "::1", "fe80::1:2", "::ffff:10.0.0.1", "2001:db8::", "1:2:3:4:5:6:7:8"] {
            XCTAssertTrue(AddressSyntax.isIP(valid), valid)
        }
        for invalid in ["256.0.0.1", "01.0.0.1", "1.2.3", "1:2:3:4:5:6:7:8:9", "1::2::3", "host", ":::"] {
            XCTAssertFalse(AddressSyntax.isIP(invalid), invalid)
        }
        XCTAssertTrue(AddressSyntax.isIPOrCIDR("0.0.0.0/0"))
        XCTAssertTrue(AddressSyntax.isIPOrCIDR("2001:db8::/32"))
        XCTAssertFalse(AddressSyntax.isIPOrCIDR("10.0.0.0/"))
        XCTAssertTrue(AddressSyntax.isHostname("backend-1.internal"))
        XCTAssertFalse(AddressSyntax.isHostname("-bad.example"))
        XCTAssertFalse(AddressSyntax.isHostname("1.2.3.999"))
    }
}
