import XCTest

@testable import ALBManifest

final class ReadErrorAndBOMTests: XCTestCase {
    private let loadBalancer = """
        apiVersion: alb/v1
        kind: LoadBalancer
        metadata: {name: lb}
        spec: {}
        idle: oops
        """

    func testByteOrderMarkIsAcceptedAndPositionsDoNotCountIt() {
        let set = ManifestLoader.load([ManifestFile(path: "lb.yaml", contents: "\u{FEFF}" + loadBalancer)])
        XCTAssertNil(set.unparsableFiles["lb.yaml"])
        // The stray field is on line 5, column 1: the mark shifts nothing.
        XCTAssertEqual(set.diagnostics.map(\.location.description), ["lb.yaml:5:1"])
        let clean = ManifestLoader.load([ManifestFile(path: "lb.yaml", contents: "\u{FEFF}" + loadBalancer
            .replacingOccurrences(of: "idle: oops", with: ""))])
        XCTAssertEqual(clean.resources.keys.map(\.description), ["LoadBalancer/lb"])
        XCTAssertTrue(clean.isValid)
    }

    func testUnreadablePathIsAFileLevelErrorWithoutPosition() {
        let set = ManifestLoader.load([ManifestFile(path: "m/a", readError: "symbolic link loop: it leads back to m")])
        XCTAssertEqual(set.diagnostics.map(\.formatted), ["m/a: error: symbolic link loop: it leads back to m"])
        XCTAssertEqual(set.unparsableFiles["m/a"]?.reason, .parseError)
    }

    func testCacheDoesNotConfuseAReadErrorWithAnEmptyFile() {
        var cache = ManifestCache()
        _ = ManifestLoader.load([ManifestFile(path: "x.yaml", readError: "dangling symbolic link")], cache: &cache)
        let set = ManifestLoader.load([ManifestFile(path: "x.yaml", contents: "")], cache: &cache)
        XCTAssertTrue(set.unparsableFiles.isEmpty)
        XCTAssertTrue(set.isValid)
    }
}
