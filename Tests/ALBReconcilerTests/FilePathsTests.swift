import XCTest

@testable import ALBReconciler

final class FilePathsTests: XCTestCase {
    /// `alb reconcile m --watch` died with SIGILL: the watcher took the parent of `m` with NSString's
    /// `deletingLastPathComponent`, which traps on one-character paths on Linux.
    func testParentOfOneCharacterDirectoryDoesNotCrash() {
        XCTAssertEqual(FilePaths.parent(of: "m", currentDirectory: "/srv/alb"), "/srv/alb")
        XCTAssertEqual(FilePaths.parent(of: "m/", currentDirectory: "/srv/alb"), "/srv/alb")
        XCTAssertEqual(FilePaths.parent(of: "/m", currentDirectory: "/srv/alb"), "/")
    }

    func testParentOfEveryKindOfPath() {
        let table: [(path: String, parent: String)] = [
            (".", "/srv"), ("..", "/"), ("./x", "/srv/alb"), ("a/../b", "/srv/alb"), ("a/b/", "/srv/alb/a"),
            ("/", "/"), ("/etc/alb/manifests", "/etc/alb"), ("with space", "/srv/alb"), ("données", "/srv/alb"),
            ("a//b", "/srv/alb/a"),
        ]
        for row in table {
            XCTAssertEqual(FilePaths.parent(of: row.path, currentDirectory: "/srv/alb"), row.parent, row.path)
        }
    }

    func testChildPathsHaveOneSeparator() {
        XCTAssertEqual(FilePaths.child("x.yaml", of: "m"), "m/x.yaml")
        XCTAssertEqual(FilePaths.child("x.yaml", of: "m/"), "m/x.yaml")
        XCTAssertEqual(FilePaths.child("x.yaml", of: "."), "x.yaml")
        XCTAssertEqual(FilePaths.child("x.yaml", of: "/"), "/x.yaml")
        XCTAssertEqual(FilePaths.child("é.yaml", of: "a b"), "a b/é.yaml")
    }

    func testManifestNames() {
        XCTAssertTrue(FilePaths.isManifestName("web.yaml"))
        XCTAssertTrue(FilePaths.isManifestName("web.prod.yml"))
        XCTAssertFalse(FilePaths.isManifestName("yaml"))
        XCTAssertFalse(FilePaths.isManifestName("web.yaml.bak"))
        XCTAssertFalse(FilePaths.isManifestName("README.md"))
    }

    func testInsideComparesRealPaths() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("alb-paths-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        try FileManager.default.createDirectory(atPath: base + "/m2", withIntermediateDirectories: true)
        XCTAssertEqual(symlink(base + "/m2", base + "/m2link"), 0)
        // The status directory does not exist yet; the link into the manifest tree still counts.
        XCTAssertTrue(FilePaths.isInside(base + "/m2link/st", base + "/m2"))
        XCTAssertTrue(FilePaths.isInside(base + "/m2", base + "/m2link/"))
        XCTAssertTrue(FilePaths.isInside("st", ".", currentDirectory: base))
        XCTAssertFalse(FilePaths.isInside(base + "/status", base + "/m2"))
        XCTAssertFalse(FilePaths.isInside(base + "/m2x", base + "/m2"))
    }
}
