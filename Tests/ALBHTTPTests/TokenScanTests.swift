@testable import ALBHTTP
import XCTest

/// The word-at-a-time token scan must agree with the byte-at-a-time definition (RFC 9110 section 5.6.2) on every
/// byte at every position of a word and in the tail after the last whole word.
final class TokenScanTests: XCTestCase {
    private func byteAtATime(_ bytes: [UInt8]) -> Int {
        bytes.firstIndex { !HTTP1Syntax.isTokenChar($0) } ?? bytes.count
    }

    private func scanned(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { HTTP1Syntax.tokenPrefixLength($0) }
    }

    func testEveryByteAtEveryPositionEndsTheNameWhereTheDefinitionDoes() {
        for length in [1, 7, 8, 9, 15, 16, 17, 24] {
            for position in 0..<length {
                for byte in 0...255 {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    bytes[position] = UInt8(byte)
                    XCTAssertEqual(self.scanned(bytes), self.byteAtATime(bytes), "byte \(byte) at \(position) of \(length)")
                }
            }
        }
    }

    func testTheLettersDigitsAndDashesMaskIsExactForEveryByte() {
        for byte in 0...255 {
            let word = UInt64(byte) << 24 | 0x6161_6161_0000_6161  // the byte at 3, a NUL at 2, letters elsewhere
            let mask = HTTP1Syntax.lettersDigitsAndDashes(word)
            let expected: Bool = switch UInt8(byte) {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"): true
            default: false
            }
            XCTAssertEqual(mask >> 31 & 1 == 1, expected, "byte \(byte)")
            XCTAssertEqual(mask & 0x80_0000, 0, "the NUL next to it")
            XCTAssertEqual(mask & 0x80, 0x80, "a letter")
        }
    }

    func testRealNamesAndMixes() {
        var generator = SystemRandomNumberGenerator()
        let names = ["Content-Type: text/html", "X-Forwarded-For:1", "ETag:", "a_b.c~d|e^f`g!h#i$j%k&l'm*n+o: x",
                     "Accept-Encoding : gzip", "Host\u{7F}: x", "Caf\u{E9}: x", "Sec-WebSocket-Extensions: x"]
        for name in names {
            let bytes = Array(name.utf8)
            XCTAssertEqual(self.scanned(bytes), self.byteAtATime(bytes), name)
        }
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...40, using: &generator)).map { _ in
                UInt8.random(in: 0x20...0x7E, using: &generator)
            }
            XCTAssertEqual(self.scanned(bytes), self.byteAtATime(bytes), "\(bytes)")
        }
    }
}

/// The word-at-a-time check of a field value must agree with the byte-at-a-time definition (RFC 9110 section 5.5)
/// for every byte at every position of every length from 0 to 25: whole words, the overlapping last word, the two
/// halves of a value of four to seven bytes, and the bytes of a shorter one.
final class FieldValueScanTests: XCTestCase {
    func testEveryByteAtEveryPositionOfEveryLengthIsJudgedAsTheDefinitionJudgesIt() {
        for length in 0...25 {
            let clean = [UInt8](repeating: UInt8(ascii: "v"), count: length)
            XCTAssertTrue(clean.withUnsafeBytes { HTTP1Syntax.areFieldValueChars($0) }, "length \(length)")
            for position in 0..<length {
                for byte in 0...255 {
                    var bytes = clean
                    bytes[position] = UInt8(byte)
                    XCTAssertEqual(bytes.withUnsafeBytes { HTTP1Syntax.areFieldValueChars($0) },
                                   HTTP1Syntax.isFieldValueChar(UInt8(byte)), "byte \(byte) at \(position) of \(length)")
                }
            }
        }
    }
}

/// The word-at-a-time case-insensitive compare must agree with the byte-at-a-time one for every byte value at
/// every position of every length the decoders compare (names up to `proxy-connection`, values like `close`).
final class CaseInsensitiveCompareTests: XCTestCase {
    private func byteAtATime(_ bytes: [UInt8], _ expected: String) -> Bool {
        let target = Array(expected.utf8)
        return bytes.count == target.count && zip(bytes, target).allSatisfy { byte, wanted in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 == wanted : byte == wanted
        }
    }

    func testEveryByteAtEveryPositionOfEveryLength() {
        let targets: [StaticString] = ["", "te", "host", "close", "upgrade", "trailer", "keep-alive", "connection",
                                       "content-length", "proxy-connection", "transfer-encoding", "chunked"]
        for target in targets {
            let text = target.description
            let count = target.utf8CodeUnitCount
            for position in 0..<max(count, 1) {
                for byte in 0...255 {
                    var bytes = Array(text.utf8)
                    if count > 0 { bytes[position] = UInt8(byte) } else { bytes = [UInt8(byte)] }
                    let ours = bytes.withUnsafeBytes { HTTP1Syntax.equalsIgnoringASCIICase($0, target) }
                    XCTAssertEqual(ours, self.byteAtATime(bytes, text), "\(text): byte \(byte) at \(position)")
                }
            }
            let upper = Array(text.uppercased().utf8)
            XCTAssertTrue(upper.withUnsafeBytes { HTTP1Syntax.equalsIgnoringASCIICase($0, target) }, text)
            let longer = Array((text + "x").utf8)
            XCTAssertFalse(longer.withUnsafeBytes { HTTP1Syntax.equalsIgnoringASCIICase($0, target) }, text)
        }
    }

    func testLoweringAWordLowersCapitalsOnly() {
        // `A`, `Z`, `@`, `[`, `` ` ``, `{` and 0x80 around the byte at position 5.
        let around: [UInt8] = [0x80, 0x7B, 0x60, 0x5B, 0x40, 0, 0x5A, 0x41]
        let aroundLowered: [UInt8] = [0x80, 0x7B, 0x60, 0x5B, 0x40, 0, 0x7A, 0x61]
        func word(_ bytes: [UInt8]) -> UInt64 {
            bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        for byte in 0...255 {
            var bytes = around
            bytes[5] = UInt8(byte)
            var expected = aroundLowered
            expected[5] = (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(UInt8(byte)) ? UInt8(byte) | 0x20 : UInt8(byte)
            XCTAssertEqual(HTTP1Syntax.lowercasedASCII(word(bytes)), word(expected), "byte \(byte)")
        }
    }
}
