import XCTest
import Yams
@testable import ALBManifest

final class HostileInputTests: XCTestCase {
    func testBillionLaughsIsRejectedFast() {
        let bomb = """
        a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
        b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
        c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
        d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
        e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
        f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
        g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
        h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
        i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
        """
        XCTAssertLessThan(bomb.utf8.count, 450)
        let start = ContinuousClock.now
        let set = load(("bomb.yaml", bomb), withBase: false)
        XCTAssertLessThan(ContinuousClock.now - start, .milliseconds(500))
        assertOnly(set, "bomb.yaml:2:8: error: YAML aliases are not supported (anchor \"a\")", reason: .parseError)
        XCTAssertEqual(set.unparsableFiles["bomb.yaml"]?.reason, .parseError)
    }

    func testAliasAsMappingKeyIsRejectedBeforeComposing() {
        let set = load(("k.yaml", "a: &x [1, 2]\n? *x\n: 1\n"), withBase: false)
        assertOnly(set, "k.yaml:2:3: error: YAML aliases are not supported (anchor \"x\")", reason: .parseError)
    }

    func testAliasInsideAManifestMakesTheWholeFileUnparsable() {
        let text = Fixture.doc("ServerGroup", "a", "servers: [&s {address: 10.0.0.1, port: 80}]") + "---\n"
            + Fixture.doc("ServerGroup", "b", "servers: [*s]")
        let set = load(("g.yaml", text), withBase: false)
        assertOnly(set, "g.yaml:13:13: error: YAML aliases are not supported (anchor \"s\")", reason: .parseError)
        XCTAssertTrue(set.resources.isEmpty)
        XCTAssertTrue(set.invalid.isEmpty)
        XCTAssertNil(set.definedBy["g.yaml"])
    }

    func testAnchorsWithoutAliasesAreFineAndStarsInTextAreNotAliases() {
        let text = Fixture.doc("ServerGroup", "a", "servers: [&s {address: 10.0.0.1, port: 80, description: \"*s and &t\"}]")
        assertDiagnostics(load(("g.yaml", text), withBase: false), [])
    }

    func testNodeLevelAliasDetectionIsASecondGuard() throws {
        let parser = try Parser(yaml: "a: &x [1]\nb: *x\n")
        let root = try XCTUnwrap(try parser.nextRoot())
        let finding = try XCTUnwrap(HostileInputGuard.scan([root]))
        XCTAssertEqual(finding.message, "YAML aliases are not supported (anchor \"x\")")
        withExtendedLifetime(parser) {}
    }

    func testNodeCountCap() {
        let text = "a: [" + String(repeating: "1,", count: 100_001) + "1]\n"
        let set = load(("n.yaml", text), withBase: false)
        XCTAssertEqual(set.diagnostics.map(\.message), ["file has more than 100000 YAML nodes"])
        XCTAssertNotNil(set.unparsableFiles["n.yaml"])
    }

    func testOversizeFileIsRejectedBeforeParsing() {
        let text = "# " + String(repeating: "x", count: ManifestLoader.maxFileBytes) + "\n"
        let set = load(("big.yaml", text))
        assertOnly(set, "big.yaml:1:1: error: file is too large (more than 1048576 bytes)", reason: .parseError)
        XCTAssertEqual(set.resources.count, 4)
    }

    func testSyntaxErrorPositionAndOtherFilesStillLoad() {
        let set = load(("bad.yaml", "apiVersion: alb/v1\nkind: [Listener\nmetadata: {}\n"))
        XCTAssertEqual(set.diagnostics.count, 1)
        let diagnostic = set.diagnostics[0]
        XCTAssertEqual(diagnostic.reason, .parseError)
        XCTAssertEqual(diagnostic.location.file, "bad.yaml")
        XCTAssertEqual(diagnostic.location.line, 3)
        XCTAssertEqual(diagnostic.formatted, "bad.yaml:3:9: error: invalid YAML: did not find expected ',' or ']' "
                       + "(while parsing a flow sequence at 2:7)")
        XCTAssertEqual(set.unparsableFiles["bad.yaml"], diagnostic)
        XCTAssertEqual(set.resources.count, 4)
    }

    func testDuplicateMappingKey() {
        let set = load(("d.yaml", "apiVersion: alb/v1\nkind: ServerGroup\nkind: Listener\n"), withBase: false)
        assertOnly(set, "d.yaml:2:1: error: duplicate mapping key \"kind\"", reason: .parseError)
    }

    func testKeysThatReadAsTheSameTextAreDuplicatesWhateverTheirQuoting() {
        // `1` and "1" are one tag key to the decoder: the second would silently replace the first.
        let text = Fixture.doc("ServerGroup", "g", "servers: [{address: 127.0.0.1, port: 9000}]")
            .replacingOccurrences(of: "  name: g\n", with: "  name: g\n  tags: {1: a, \"1\": b}\n")
        let set = load(("g.yaml", text), withBase: false)
        XCTAssertEqual(set.diagnostics.map(\.reason), [.parseError], set.diagnostics.map(\.formatted).joined(separator: "\n"))
        XCTAssertTrue(set.diagnostics.first?.formatted.contains("duplicate mapping key \"1\"") ?? false,
                      set.diagnostics.map(\.formatted).joined(separator: "\n"))
    }

    func testPlainScalarsOfEveryYAMLTypeStillDecodeAsTheirFields() {
        // Numbers, booleans and null-looking values are read from their text, not from a resolved tag.
        let text = Fixture.doc("Listener", "web", Fixture.listenerSpec(port: 8080, "http2: false\ncompression: ~\nidleTimeout: 30"))
        let set = load(("l.yaml", text))
        guard case .listener(let spec)? = set.resources[ResourceID(kind: .listener, name: "web")]?.spec else {
            return XCTFail(set.diagnostics.map(\.formatted).joined(separator: "\n"))
        }
        XCTAssertEqual(spec.port, 8080)
        XCTAssertEqual(spec.http2, false)
        XCTAssertEqual(spec.idleTimeout, 30)
    }

    func testNonScalarMappingKey() {
        let text = Fixture.doc("ServerGroup", "g", "? [a, b]\n: 1")
        assertOnly(load(("g.yaml", text), withBase: false),
                   "g.yaml:6:5: error: spec: mapping keys must be scalars, got a list", reason: .invalidSpec)
    }
}
