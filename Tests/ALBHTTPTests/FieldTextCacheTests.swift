@testable import ALBHTTP
import NIOCore
import NIOHTTP1
import XCTest

final class FieldTextCacheTests: XCTestCase {
    private func text(_ cache: FieldTextCache, _ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { cache.text($0) }
    }

    private func storage(_ text: String) -> UnsafeRawPointer? {
        var copy = text
        return copy.withUTF8 { UnsafeRawPointer($0.baseAddress) }
    }

    func testARepeatedLongTextIsTheStringMadeTheFirstTime() {
        let cache = FieldTextCache()
        let date = Array("Fri, 27 Nov 2026 03:55:41 GMT".utf8)
        let first = self.text(cache, date)
        let second = self.text(cache, date)
        XCTAssertEqual(second, "Fri, 27 Nov 2026 03:55:41 GMT")
        XCTAssertEqual(self.storage(first), self.storage(second), "the second is the first string, not a new one")
    }

    /// A response's `Date` and `Last-Modified` differ in the middle only (their hours): both are kept.
    func testTextsDifferingInTheMiddleOnlyAreKeptSideBySide() {
        let cache = FieldTextCache()
        let date = Array("Wed, 25 Nov 2026 12:00:00 GMT".utf8)
        let modified = Array("Wed, 25 Nov 2026 11:00:00 GMT".utf8)
        let first = (self.text(cache, date), self.text(cache, modified))
        let second = (self.text(cache, date), self.text(cache, modified))
        XCTAssertEqual(self.storage(first.0), self.storage(second.0))
        XCTAssertEqual(self.storage(first.1), self.storage(second.1))
    }

    /// Two texts whose bytes pick the same set, used in turn, are both kept; a third one there takes the
    /// slot filled first.
    func testTwoTextsOfOneSetAreBothKept() throws {
        func set(_ text: [UInt8]) -> Int { text.withUnsafeBytes { FieldTextCache.set($0.baseAddress!, count: $0.count) } }
        let candidates = (0..<2000).map { Array("Mozilla/5.0 client number \($0)".utf8) }
        let bySet = Dictionary(grouping: candidates, by: set)
        let three = try XCTUnwrap(bySet.values.first { $0.count >= 3 })
        let cache = FieldTextCache()
        let first = (self.text(cache, three[0]), self.text(cache, three[1]))
        let again = (self.text(cache, three[0]), self.text(cache, three[1]))
        XCTAssertEqual(self.storage(first.0), self.storage(again.0))
        XCTAssertEqual(self.storage(first.1), self.storage(again.1))
        XCTAssertEqual(Array(self.text(cache, three[2]).utf8), three[2])  // replaces three[0], the first filled
        XCTAssertEqual(self.storage(self.text(cache, three[1])), self.storage(first.1))
        XCTAssertEqual(Array(self.text(cache, three[0]).utf8), three[0])
    }

    /// Whatever was kept before, a text is always exactly its bytes: texts of every length around the limits,
    /// many more than there are slots, each asked twice in varying orders.
    func testEveryTextIsItsBytesWhateverTheCacheHolds() {
        let cache = FieldTextCache()
        var generator = SystemRandomNumberGenerator()
        var texts: [[UInt8]] = []
        for length in [0, 1, 8, 15, 16, 17, 24, 64, 255, 256, 257, 1000] {
            for _ in 0..<20 {
                texts.append((0..<length).map { _ in UInt8.random(in: 0x21...0x7E, using: &generator) })
            }
        }
        // Near neighbours: equal length, head and tail, differing in the middle only.
        for digit in UInt8(ascii: "0")...UInt8(ascii: "9") {
            texts.append(Array("Fri, 27 Nov 2026 03:5".utf8) + [digit] + Array(":41 GMT".utf8))
        }
        for round in 0..<3 {
            for bytes in round == 1 ? texts.reversed() : texts {
                XCTAssertEqual(Array(self.text(cache, bytes).utf8), bytes)
            }
        }
    }

    func testBytesThatAreNotUTF8GiveWhatStringDecodingGives() {
        let cache = FieldTextCache()
        let invalid: [UInt8] = Array("caf".utf8) + [0xE9] + Array(" au lait, s'il vous plait".utf8)
        let expected = String(decoding: invalid, as: UTF8.self)
        XCTAssertEqual(self.text(cache, invalid), expected)
        XCTAssertEqual(self.text(cache, invalid), expected)
        // The replacement character's bytes are not the bytes that arrived: they must not come back for them.
        XCTAssertEqual(Array(self.text(cache, Array(expected.utf8)).utf8), Array(expected.utf8))
    }

    /// A decoder with the cache returns the heads a decoder without it returns, request after request.
    func testDecodedHeadsAreTheSameWithTheCache() throws {
        let request = "GET /a HTTP/1.1\r\nHost: example.com\r\n"
            + "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
            + "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
            + "Upgrade-Insecure-Requests: 1\r\nX: \r\n\r\n"
        let cache = FieldTextCache()
        var plain = StrictHTTPRequestDecoder()
        var cached = StrictHTTPRequestDecoder(fieldTexts: cache)
        for _ in 0..<3 {
            let expected = try decodeAll(request, decoder: &plain, byteByByte: false).parts
            XCTAssertEqual(try decodeAll(request, decoder: &cached, byteByByte: false).parts, expected)
            XCTAssertEqual(try decodeAll(request, decoder: &cached, byteByByte: true).parts, expected)
        }
    }

    /// Short texts are copied whole, longer ones decoded: either way the string is the one
    /// `String(decoding:as:)` makes, invalid UTF-8 (obs-text a field value may carry) repaired alike.
    func testShortTextsAreTheStringsDecodingMakes() {
        let samples: [[UInt8]] = [
            [], Array("keep-alive".utf8), Array("fifteen bytes!!".utf8), Array("sixteen bytes!!!".utf8),
            Array("caf\u{E9}".utf8), [0x61, 0xFF, 0x62], [0xC3], [0x80, 0x80], Array(repeating: 0xE9, count: 15),
            Array(repeating: 0xE9, count: 16),
        ]
        for bytes in samples {
            bytes.withUnsafeBytes { raw in
                let made = String(shortUTF8: raw)
                let decoded = String(decoding: raw, as: UTF8.self)
                XCTAssertEqual(made, decoded, "\(bytes)")
                XCTAssertEqual(Array(made.utf8), Array(decoded.utf8), "\(bytes)")
            }
        }
    }

    func testHTTP1VersionsAreReadFromTheirFirstEightBytes() {
        func minor(_ text: String) -> Int? {
            Array(text.utf8).withUnsafeBytes { HTTP1Syntax.http1MinorVersion(startOf: $0) }
        }
        XCTAssertEqual(minor("HTTP/1.1"), 1)
        XCTAssertEqual(minor("HTTP/1.0 200 OK"), 0)
        for refused in ["HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.", "HTTP 1.1", "", "XTTP/1.1"] {
            XCTAssertNil(minor(refused), refused)
        }
    }
}
