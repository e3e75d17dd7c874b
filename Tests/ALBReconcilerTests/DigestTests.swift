import ALBManifest
import XCTest

@testable import ALBReconciler

final class DigestTests: XCTestCase {
    /// A resource's digest is the FNV-1a of its `path=value` lines joined by newlines, hashed as the entries
    /// are walked: the same value as hashing that text, so digests written by an earlier version still match.
    func testFieldsDigestIsTheDigestOfTheirText() {
        let fields = CanonicalFields(entries: [("port", "80"), ("tags.team", "wéb"), ("rules[0].name", "a=b")])
        XCTAssertEqual(Reconciler.digest(fields), Reconciler.digest("port=80\ntags.team=wéb\nrules[0].name=a=b"))
        XCTAssertEqual(Reconciler.digest(CanonicalFields(entries: [])), Reconciler.digest(""))
        XCTAssertEqual(Reconciler.digest(""), "cbf29ce484222325", "FNV-1a 64's offset basis")
        XCTAssertEqual(Reconciler.digest("a"), "af63dc4c8601ec8c", "FNV-1a 64 of \"a\"")
    }
}
