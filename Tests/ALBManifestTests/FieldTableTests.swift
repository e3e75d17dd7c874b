import XCTest
@testable import ALBManifest

/// The field tables (`ManifestFields`) against the decoder: every constraint a table states (and so
/// `alb schema` publishes) is one `alb validate` enforces, field by field, and the unknown-field
/// diagnostic names the nearest known field.
final class FieldTableTests: XCTestCase {
    // MARK: Did you mean

    func testDistanceCountsEditsAndSwaps() {
        XCTAssertEqual(NearestName.distance("idletimeout", "idletimeout"), 0)
        XCTAssertEqual(NearestName.distance("idletimout", "idletimeout"), 1)
        XCTAssertEqual(NearestName.distance("ideltimeout", "idletimeout"), 1)  // two neighbours swapped
        XCTAssertEqual(NearestName.distance("port", "prot"), 1)
        XCTAssertEqual(NearestName.distance("", "abc"), 3)
        XCTAssertEqual(NearestName.distance("kitten", "sitting"), 3)
    }

    func testSuggestsOnlyCloseNames() {
        let listener = ManifestFields.listener.names
        XCTAssertEqual(NearestName.suggestion(for: "idleTimout", among: listener), "idleTimeout")
        XCTAssertEqual(NearestName.suggestion(for: "idletimeout", among: listener), "idleTimeout")
        XCTAssertEqual(NearestName.suggestion(for: "requestTimeuot", among: listener), "requestTimeout")
        XCTAssertEqual(NearestName.suggestion(for: "prot", among: listener), "port")
        XCTAssertNil(NearestName.suggestion(for: "timeout", among: listener))
        XCTAssertNil(NearestName.suggestion(for: "colour", among: ManifestFields.document.names))
    }

    func testUnknownFieldNamesTheNearestKnownOne() {
        let spec = Fixture.listenerSpec("idleTimout: 30\nheaders: {xForwardedFro: true, slbid: true, zzz: true}")
        let set = load(("l.yaml", Fixture.doc("Listener", "web", spec)))
        assertDiagnostics(set, [
            "l.yaml:10:3: error: unknown field \"spec.idleTimout\" (did you mean \"idleTimeout\"?)",
            "l.yaml:11:13: error: unknown field \"spec.headers.xForwardedFro\" (did you mean \"xForwardedFor\"?)",
            "l.yaml:11:34: error: unknown field \"spec.headers.slbid\" (did you mean \"slbId\"?)",
            "l.yaml:11:47: error: unknown field \"spec.headers.zzz\"",
        ])
        let servers = Fixture.doc("ServerGroup", "g", "servers: [{adress: 10.0.0.1, port: 80}]")
        assertDiagnostics(load(("g.yaml", servers)), [
            "g.yaml:6:13: error: missing required field \"spec.servers[0].address\"",
            "g.yaml:6:14: error: unknown field \"spec.servers[0].adress\" (did you mean \"address\"?)",
        ])
    }

    // MARK: Every constraint of the tables is enforced by the decoder

    /// The schema's name pattern accepts exactly the names the decoder accepts.
    func testNamePatternMatchesTheDecoder() throws {
        let pattern = try NSRegularExpression(pattern: ManifestFields.namePattern)
        let names = ["a", "0", "a-b", "web-https", "ab-9", "-a", "a-", "A", "a_b", "a.b", "é", "",
                     String(repeating: "a", count: 63), String(repeating: "a", count: 64)]
        for name in names {
            let range = NSRange(name.startIndex..., in: name)
            let matches = pattern.firstMatch(in: name, range: range) != nil
            XCTAssertEqual(matches, DocumentDecoder.isValidName(name), "\(name)")
        }
    }

    /// A valid spec per kind against `Fixture.base`; the listener is HTTPS so its TLS fields are allowed.
    static let minimal: [ResourceKind: JSONValue] = [
        .loadBalancer: .object([]),
        .listener: .object([
            ("loadBalancer", .string("lb")), ("protocol", .string("HTTPS")), ("port", .int(443)),
            ("certificates", .object([("server", .string("srv"))])),
            ("defaultAction", .object([("forwardGroup", .object([
                ("serverGroups", .array([.object([("name", .string("blue"))])])),
            ]))])),
        ]),
        .serverGroup: .object([("servers", .array([.object([("address", .string("10.0.0.1")), ("port", .int(80))])]))]),
        .certificate: .object([("type", .string("Server")), ("certificate", .string("c.pem")),
                               ("privateKey", .string("k.pem"))]),
        .securityPolicy: .object([("tlsVersions", .array([.string("TLSv1.2")])),
                                  ("ciphers", .array([.string("ECDHE-RSA-AES128-GCM-SHA256")]))]),
    ]

    /// Decodes `spec` as a document of `kind` named `x` (JSON is YAML) beside the fixtures.
    func decode(_ kind: ResourceKind, _ spec: JSONValue) -> ManifestSet {
        let document = JSONValue.object([
            ("apiVersion", .string("alb/v1")), ("kind", .string(kind.rawValue)),
            ("metadata", .object([("name", .string("x"))])), ("spec", spec),
        ])
        return load(("x.yaml", document.rendered))
    }

    func testTheMinimalSpecsAreValid() throws {
        for kind in ResourceKind.allCases {
            let spec = try XCTUnwrap(Self.minimal[kind])
            assertDiagnostics(decode(kind, spec), [])
        }
    }

    /// Every field of every table: out-of-range integers, unknown enumeration values, unknown keys in
    /// mappings and missing required fields are refused at that field's path; an explicit default
    /// decodes as the absent field does.
    func testEveryTableConstraintIsEnforced() throws {
        var checked = 0
        for kind in ResourceKind.allCases {
            let base = try XCTUnwrap(Self.minimal[kind])
            let baseline = decode(kind, base)
            walk(ManifestFields.spec(for: kind).fields, at: []) { field, path in
                let text = "spec." + Self.dotted(path)
                let messages = { (spec: JSONValue) in self.decode(kind, spec).diagnostics.map(\.message) }
                switch field.shape {
                case .integer(let range):
                    for value in [range.lowerBound - 1, range.upperBound + 1] {
                        let got = messages(base.setting(path, to: .int(value)))
                        XCTAssert(got.contains { $0.hasPrefix("\(text): \(value) is out of range") }, "\(text)=\(value): \(got)")
                    }
                case .choice:
                    let got = messages(base.setting(path, to: .string("NoSuchValue")))
                    XCTAssert(got.contains { $0.hasPrefix("\(text): \"NoSuchValue\" is not one of") }, "\(text): \(got)")
                case .mapping:
                    let got = messages(base.setting(path + [.key("zzzUnknown")], to: .bool(true)))
                    XCTAssert(got.contains("unknown field \"\(text).zzzUnknown\""), "\(text): \(got)")
                case .list(let item, let count):
                    if case .choice = item {
                        let got = messages(base.setting(path, to: .array([.string("NoSuchValue")])))
                        XCTAssert(got.contains { $0.hasPrefix("\(text)[0]: ") && $0.contains("\"NoSuchValue\"") },
                                  "\(text): \(got)")
                    }
                    if let count, count.lowerBound > 0 {
                        let got = messages(base.setting(path, to: .array([])))
                        XCTAssert(got.contains { $0.hasPrefix("\(text): must not be empty") }, "\(text): \(got)")
                    }
                    if let count, count.upperBound < Int.max {
                        let many = JSONValue.array((0...count.upperBound).map { .string("n\($0)") })
                        let got = messages(base.setting(path, to: many))
                        XCTAssert(got.contains { $0.hasPrefix("\(text): \(count.upperBound + 1)") }, "\(text): \(got)")
                    }
                case .text(let rule):
                    if let limit = rule.maxLength {
                        let got = messages(base.setting(path, to: .string(String(repeating: "a", count: limit + 1))))
                        XCTAssert(got.contains { $0.hasPrefix("\(text): \(limit + 1) characters exceed") }, "\(text): \(got)")
                    }
                    if rule.pattern != nil {
                        let got = messages(base.setting(path, to: .string("no-slash")))
                        XCTAssert(got.contains { $0.hasPrefix(text) }, "\(text): \(got)")
                    }
                    if rule.minLength == 1 {
                        let got = messages(base.setting(path, to: .string("")))
                        XCTAssert(got.contains { $0.hasPrefix(text) }, "\(text) empty: \(got)")
                    }
                case .boolean, .textMap:
                    break
                }
                if field.required, base.value(at: path) != nil {
                    let got = messages(base.removing(path))
                    XCTAssert(got.contains("missing required field \"\(text)\""), "\(text) removed: \(got)")
                }
                if let value = field.defaultValue, !Self.ruleTargets(kind).contains(Self.dotted(path)) {
                    let explicit = decode(kind, base.setting(path, to: Self.json(value)))
                    XCTAssertEqual(explicit.diagnostics.map(\.formatted), [], text)
                    XCTAssertEqual(explicit.resources[ResourceID(kind: kind, name: "x")]?.canonical,
                                   baseline.resources[ResourceID(kind: kind, name: "x")]?.canonical,
                                   "\(text): explicit default \(value) decodes differently from none")
                }
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 50)
    }

    /// Every rule between fields: breaking it while its condition holds is refused at the rule's field;
    /// the same change is accepted when the condition does not hold.
    func testEveryFieldRuleIsEnforced() throws {
        var checked = 0
        for kind in ResourceKind.allCases {
            let base = try XCTUnwrap(Self.minimal[kind])
            var mappings: [(path: [Step], shape: FieldShape)] = [([], ManifestFields.spec(for: kind))]
            walk(ManifestFields.spec(for: kind).fields, at: []) { field, path in
                if case .mapping = field.shape { mappings.append((path, field.shape)) }
            }
            for (mappingPath, shape) in mappings {
                guard case .mapping(let fields, let rules) = shape else { continue }
                for rule in rules {
                    let trigger = try XCTUnwrap(fields[field: rule.field])
                    let target: [String]
                    var broken = { (spec: JSONValue) in spec }
                    switch rule.effect {
                    case .requires(let path):
                        target = path
                        broken = { $0.removing(mappingPath + path.map(Step.key)) }
                    case .forbids(let path):
                        target = path
                        broken = { $0.setting(mappingPath + path.map(Step.key), to: .string("tls_cipher_policy_1_2")) }
                    case .forbidsTrue(let path):
                        target = path
                        broken = { $0.setting(mappingPath + path.map(Step.key), to: .bool(true)) }
                    case .atMost(let path, let limit):
                        target = path
                        broken = { $0.setting(mappingPath + path.map(Step.key), to: .int(limit + 1)) }
                    }
                    let text = "spec." + Self.dotted(mappingPath + target.map(Step.key))
                    let triggerPath = mappingPath + [.key(rule.field)]
                    for value in rule.values {
                        let spec = broken(base.setting(triggerPath, to: Self.typed(value, trigger.shape)))
                        let got = decode(kind, spec).diagnostics.map(\.message)
                        XCTAssert(got.contains { $0.contains(text) }, "\(rule.field)=\(value), \(text): \(got)")
                    }
                    if let other = Self.otherValue(than: rule.values, trigger.shape) {
                        let spec = broken(base.setting(triggerPath, to: Self.typed(other, trigger.shape)))
                        let got = decode(kind, spec).diagnostics.map(\.message)
                        XCTAssertFalse(got.contains { $0.contains(text) }, "\(rule.field)=\(other), \(text): \(got)")
                    }
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, 13)
    }

    // MARK: Helpers

    /// Calls `body` for every field of the tables under `fields`, depth first; list items at index 0.
    func walk(_ fields: [ManifestField], at path: [Step], _ body: (ManifestField, [Step]) -> Void) {
        for field in fields {
            let fieldPath = path + [.key(field.name)]
            body(field, fieldPath)
            switch field.shape {
            case .mapping(let children, _): walk(children, at: fieldPath, body)
            case .list(.mapping(let children, _), _): walk(children, at: fieldPath + [.index(0)], body)
            default: break
            }
        }
    }

    static func dotted(_ path: [Step]) -> String {
        var out = ""
        for step in path {
            switch step {
            case .key(let key): out += out.isEmpty ? key : ".\(key)"
            case .index(let index): out += "[\(index)]"
            }
        }
        return out
    }

    /// Paths (from `spec`) that a rule constrains or tests: their defaults are not valid everywhere.
    static func ruleTargets(_ kind: ResourceKind) -> Set<String> {
        var targets: Set<String> = []
        func collect(_ shape: FieldShape, prefix: String) {
            guard case .mapping(let fields, let rules) = shape else { return }
            for rule in rules {
                switch rule.effect {
                case .requires(let path), .forbids(let path), .forbidsTrue(let path), .atMost(let path, _):
                    targets.insert(prefix + path.joined(separator: "."))
                }
            }
            for field in fields { collect(field.shape, prefix: prefix + field.name + ".") }
        }
        collect(ManifestFields.spec(for: kind), prefix: "")
        return targets
    }

    static func json(_ value: FieldDefault) -> JSONValue {
        switch value {
        case .text(let text): .string(text)
        case .integer(let number): .int(number)
        case .boolean(let flag): .bool(flag)
        case .texts(let texts): .array(texts.map(JSONValue.string))
        }
    }

    static func typed(_ value: String, _ shape: FieldShape) -> JSONValue {
        if case .boolean = shape { return .bool(value == "true") }
        return .string(value)
    }

    static func otherValue(than values: [String], _ shape: FieldShape) -> String? {
        switch shape {
        case .boolean: values.contains("true") ? "false" : "true"
        case .choice(let choices): choices.first { !values.contains($0) }
        default: nil
        }
    }
}

enum Step {
    case key(String)
    case index(Int)
}

extension JSONValue {
    /// The value at `path`, nil where a step is missing.
    func value(at path: [Step]) -> JSONValue? {
        guard let first = path.first else { return self }
        switch (self, first) {
        case (.object(let members), .key(let key)): return members.first { $0.key == key }?.value.value(at: Array(path.dropFirst()))
        case (.array(let items), .index(let index)) where items.indices.contains(index):
            return items[index].value(at: Array(path.dropFirst()))
        default: return nil
        }
    }

    /// A copy with `value` at `path`, creating mappings on the way.
    func setting(_ path: [Step], to value: JSONValue) -> JSONValue { replacing(path[...], with: value) }

    /// A copy without the value at `path`.
    func removing(_ path: [Step]) -> JSONValue { replacing(path[...], with: nil) }

    private func replacing(_ path: ArraySlice<Step>, with value: JSONValue?) -> JSONValue {
        guard let first = path.first else { return value ?? self }
        let rest = path.dropFirst()
        switch (self, first) {
        case (.object(var members), .key(let key)):
            if let index = members.firstIndex(where: { $0.key == key }) {
                if rest.isEmpty, value == nil {
                    members.remove(at: index)
                } else {
                    members[index].value = members[index].value.replacing(rest, with: value)
                }
            } else if value != nil {
                members.append((key, JSONValue.object([]).replacing(rest, with: value)))
            }
            return .object(members)
        case (.array(var items), .index(let index)) where items.indices.contains(index):
            items[index] = items[index].replacing(rest, with: value)
            return .array(items)
        default:
            return self
        }
    }
}
