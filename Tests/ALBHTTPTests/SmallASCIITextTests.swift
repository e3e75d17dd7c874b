@testable import ALBHTTP
import XCTest

/// The packed strings must be the very values the standard library makes: equal, hashing alike, with the
/// same UTF-8 and the same bits, at every length a string holds inline.
final class SmallASCIITextTests: XCTestCase {
    private func packed(_ bytes: [UInt8]) -> String? {
        bytes.withUnsafeBytes { SmallASCIIText.string($0) }
    }

    private func bits(_ text: String) -> (UInt64, UInt64) {
        unsafeBitCast(text, to: (UInt64, UInt64).self)
    }

    func testTheLayoutCheckPassesOnThisPlatform() {
        // Every supported platform (64-bit, little-endian) has the layout; were it to fail, the decoders would
        // still be right but slower, and this test says so.
        XCTAssertTrue(SmallASCIIText.layoutMatches)
    }

    func testEveryLengthAndByteGivesTheLibrarysString() throws {
        let alphabet = (0..<128).map(UInt8.init)
        for count in 0...SmallASCIIText.capacity {
            for start in stride(from: 0, to: 128, by: 7) {
                let bytes = (0..<count).map { alphabet[(start + $0 * 13) % 128] }
                let made = String(decoding: bytes, as: UTF8.self)
                let small = try XCTUnwrap(self.packed(bytes), "\(count) ASCII bytes")
                XCTAssertEqual(small, made)
                XCTAssertEqual(Array(small.utf8), bytes)
                XCTAssertEqual(small.hashValue, made.hashValue)
                XCTAssertEqual(small.utf8.count, count)
                let (packedBits, madeBits) = (self.bits(small), self.bits(made))
                XCTAssertTrue(packedBits == madeBits, "\(count) bytes: \(packedBits) against \(madeBits)")
            }
        }
    }

    func testAPackedStringWorksAsAnyOther() throws {
        var host = try XCTUnwrap(self.packed(Array("example.com".utf8)))
        XCTAssertEqual(host.lowercased(), "example.com")
        XCTAssertTrue(host.hasPrefix("example"))
        host += ":8080"
        XCTAssertEqual(host, "example.com:8080")
        XCTAssertEqual(Set([try XCTUnwrap(self.packed(Array("a".utf8))), "a"]).count, 1)
    }

    func testLoweringInPlaceMatchesTheLibraryForEveryASCIIByte() throws {
        let alphabet = (0..<128).map(UInt8.init)
        for count in 0...SmallASCIIText.capacity {
            for start in 0..<128 {
                let text = String(decoding: (0..<count).map { alphabet[(start + $0) % 128] }, as: UTF8.self)
                let lowered = try XCTUnwrap(SmallASCIIText.lowercased(text), "\(count) ASCII bytes")
                XCTAssertEqual(lowered, text.lowercased())
                XCTAssertEqual(lowered.utf8.count, count)
            }
        }
        XCTAssertEqual(SmallASCIIText.lowercased("Content-Type"), "content-type")
        XCTAssertEqual(SmallASCIIText.lowercased("X-AZ@[`{"), "x-az@[`{")
    }

    /// The lowercase-token check on a name's words says what a check of each byte says (a token character, not
    /// `A`-`Z`), for every ASCII byte at every place of every length, from the first byte or the second.
    func testTheLowercaseTokenCheckOnTheWordsMatchesOneByteAtATime() throws {
        func isLowercaseTokenByte(_ byte: UInt8) -> Bool {
            HTTP1Syntax.isTokenChar(byte) && !(UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
        }
        for count in 0...SmallASCIIText.capacity {
            for place in 0..<max(count, 1) {
                for byte in UInt8(0)..<128 {
                    var bytes = Array(repeating: UInt8(ascii: "a"), count: count)
                    if count > 0 { bytes[place] = byte }
                    let text = String(decoding: bytes, as: UTF8.self)
                    let (first, second, length) = try XCTUnwrap(SmallASCIIText.inlineWords(text, layoutChecked: ()))
                    XCTAssertEqual(length, count)
                    for start in [0, 1] {
                        let expected = count > start && bytes[start...].allSatisfy(isLowercaseTokenByte)
                        XCTAssertEqual(SmallASCIIText.isLowercaseToken(first: first, second: second, count: count, from: start),
                                       expected, "\(bytes) from \(start)")
                    }
                }
            }
        }
    }

    func testLoweringInPlaceLeavesOtherStringsToTheCaller() {
        XCTAssertNil(SmallASCIIText.lowercased("Content-Security-Policy"), "held in storage")
        XCTAssertNil(SmallASCIIText.lowercased("Caf\u{E9}"), "not ASCII")
    }

    func testLongTextAndNonASCIIBytesAreLeftToTheLibrary() {
        XCTAssertNil(self.packed(Array("0123456789abcdef".utf8)), "16 bytes need storage")
        XCTAssertNil(self.packed([0x61, 0xC3, 0xA9]), "UTF-8 for é")
        XCTAssertNil(self.packed([0x61, 0xFF]), "an invalid byte: the library repairs it")
        for count in 1...SmallASCIIText.capacity {
            var bytes = [UInt8](repeating: 0x61, count: count)
            bytes[count - 1] = 0x80
            XCTAssertNil(self.packed(bytes), "a high byte last of \(count)")
            bytes[count - 1] = 0x61
            bytes[0] = 0x80
            XCTAssertNil(self.packed(bytes), "a high byte first of \(count)")
        }
    }

    func testString_shortUTF8_RepairsWhatItCannotPack() {
        let bytes: [UInt8] = [0x61, 0xFF, 0x62]
        XCTAssertEqual(bytes.withUnsafeBytes { String(shortUTF8: $0) }, "a\u{FFFD}b")
        XCTAssertEqual(Array("Content-Length".utf8).withUnsafeBytes { String(shortUTF8: $0) }, "Content-Length")
    }
}
