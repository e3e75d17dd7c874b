import XCTest
@testable import ALBManifest

/// A load with many files to decode (a cold start) decodes them at once; what comes out must not depend on
/// which file finished first.
final class ConcurrentDecodingTests: XCTestCase {
    /// 60 files: valid listeners, listeners with an invalid field, and files that do not parse.
    private func files() -> [ManifestFile] {
        var files = [ManifestFile(path: "base.yaml", contents: Fixture.base)]
        for index in 0..<60 {
            let path = String(format: "l%02d.yaml", index)
            switch index % 3 {
            case 0: files.append(ManifestFile(path: path, contents: Fixture.doc("Listener", "l\(index)",
                                                                               Fixture.listenerSpec(port: 1000 + index))))
            case 1: files.append(ManifestFile(path: path, contents: Fixture.doc("Listener", "l\(index)",
                                                                               Fixture.listenerSpec(port: 1000 + index, "idleTimeout: soon"))))
            default: files.append(ManifestFile(path: path, contents: "apiVersion: alb/v1\nkind: [unclosed\n"))
            }
        }
        return files
    }

    private func assertSame(_ lhs: ManifestSet, _ rhs: ManifestSet, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(lhs.resources, rhs.resources, file: file, line: line)
        XCTAssertEqual(lhs.diagnostics.map(\.formatted), rhs.diagnostics.map(\.formatted), file: file, line: line)
        XCTAssertEqual(lhs.invalid.mapValues { $0.map(\.formatted) }, rhs.invalid.mapValues { $0.map(\.formatted) },
                       file: file, line: line)
        XCTAssertEqual(lhs.unparsableFiles.mapValues(\.formatted), rhs.unparsableFiles.mapValues(\.formatted),
                       file: file, line: line)
        XCTAssertEqual(lhs.definedBy, rhs.definedBy, file: file, line: line)
        XCTAssertEqual(lhs.sources, rhs.sources, file: file, line: line)
    }

    func testManyFilesDecodedTogetherGiveWhatOneAtATimeGives() {
        let files = files()
        let together = ManifestLoader.load(files)
        XCTAssertEqual(together.resources.keys.filter { $0.kind == .listener }.count, 20)
        XCTAssertEqual(together.invalid.count, 20)
        XCTAssertEqual(together.unparsableFiles.count, 20)
        // One file at a time: each load finds every other file in the cache and decodes only the new one.
        var cache = ManifestCache()
        var oneByOne = ManifestSet()
        for count in 1...files.count {
            oneByOne = ManifestLoader.load(Array(files.prefix(count)), cache: &cache)
        }
        assertSame(together, oneByOne)
    }

    func testTheCacheOfALoadThatDecodedTogetherServesTheNextLoad() {
        let files = files()
        var cache = ManifestCache()
        let first = ManifestLoader.load(files, cache: &cache)
        let again = ManifestLoader.load(files, cache: &cache)
        assertSame(first, again)
        var edited = files
        edited[1] = ManifestFile(path: edited[1].path, contents: Fixture.doc("Listener", "l0", Fixture.listenerSpec(port: 2000)))
        let afterEdit = ManifestLoader.load(edited, cache: &cache)
        assertSame(afterEdit, ManifestLoader.load(edited))
    }
}
