import ALBManifest
import XCTest

@testable import ALBReconciler

final class ManifestDirectoryTests: XCTestCase {
    private var base = ""
    private let manifest = """
        apiVersion: alb/v1
        kind: LoadBalancer
        metadata: {name: lb}
        spec: {}

        """

    override func setUpWithError() throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("alb-tree-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: base + "/d/sub", withIntermediateDirectories: true)
        try manifest.write(toFile: base + "/d/sub/lb.yaml", atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: base)
    }

    private func diagnostics(_ root: String) -> [String] {
        let (files, _) = ManifestDirectory(root: root).read()
        return ManifestLoader.load(files).diagnostics.map(\.formatted)
    }

    /// `ln -s . d/a; ln -s . d/b; alb validate d` never returned.
    func testLinkLoopsAreReportedAndTheRestOfTheTreeLoads() throws {
        XCTAssertEqual(symlink(".", base + "/d/a"), 0)
        XCTAssertEqual(symlink(".", base + "/d/b"), 0)
        XCTAssertEqual(symlink("..", base + "/d/sub/up"), 0)
        let (files, exists) = ManifestDirectory(root: base + "/d").read()
        XCTAssertTrue(exists)
        let set = ManifestLoader.load(files)
        XCTAssertEqual(set.resources.keys.map(\.description), ["LoadBalancer/lb"])  // read once: no DuplicateName
        XCTAssertEqual(set.diagnostics.map(\.formatted), [
            "\(base)/d/a: error: symbolic link loop: it leads back to \(base)/d",
            "\(base)/d/b: error: symbolic link loop: it leads back to \(base)/d",
            "\(base)/d/sub/up: error: symbolic link loop: it leads back to \(base)/d",
        ])
    }

    func testSpecialFilesWhereAManifestIsExpectedAreErrors() throws {
        XCTAssertEqual(symlink("gone.yaml", base + "/d/x.yaml"), 0)
        XCTAssertEqual(mkfifo(base + "/d/f.yaml", 0o644), 0)
        try FileManager.default.createDirectory(atPath: base + "/d/dir.yaml", withIntermediateDirectories: true)
        XCTAssertEqual(diagnostics(base + "/d"), [
            "\(base)/d/dir.yaml: error: a directory where a manifest file is expected",
            "\(base)/d/f.yaml: error: not a regular file (a FIFO)",
            "\(base)/d/x.yaml: error: dangling symbolic link (its target gone.yaml does not exist)",
        ])
    }

    func testRootThatIsALinkIsFollowed() throws {
        XCTAssertEqual(symlink(base + "/d", base + "/current"), 0)
        let (files, exists) = ManifestDirectory(root: base + "/current/").read()
        XCTAssertTrue(exists)
        XCTAssertEqual(files.map(\.path), ["\(base)/current/sub/lb.yaml"])
    }

    func testRootStates() throws {
        XCTAssertEqual(ManifestDirectory(root: base + "/nope").rootState(), .missing)
        XCTAssertEqual(ManifestDirectory(root: base + "/d/sub/lb.yaml").rootState().problem,
                       "not a directory (a regular file)")
        XCTAssertEqual(symlink("nowhere", base + "/dangling"), 0)
        XCTAssertEqual(ManifestDirectory(root: base + "/dangling").rootState().problem, "dangling symbolic link")
        XCTAssertEqual(ManifestDirectory(root: base + "/d").rootState(), .directory)
    }

    func testWorkPerPassIsBounded() throws {
        let wide = base + "/wide"
        try FileManager.default.createDirectory(atPath: wide, withIntermediateDirectories: true)
        for index in 0...ManifestDirectory.maxEntries {
            XCTAssertTrue(FileManager.default.createFile(atPath: "\(wide)/n\(index)", contents: nil))
        }
        XCTAssertEqual(diagnostics(wide),
                       ["\(wide): error: more than \(ManifestDirectory.maxEntries) entries: the rest of the tree is not read"])
    }
}
