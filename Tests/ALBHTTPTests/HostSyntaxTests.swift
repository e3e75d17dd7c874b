@testable import ALBHTTP
import XCTest

final class HostSyntaxTests: XCTestCase {
    /// The bit sets are exactly RFC 3986's unreserved characters and sub-delimiters.
    func testTheNameCharactersAreTheUnreservedOnesAndTheSubDelimiters() {
        let expected = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=".utf8)
        for byte in 0...255 {
            XCTAssertEqual(HostSyntax.isNameChar(UInt8(byte)), expected.contains(UInt8(byte)), "byte \(byte)")
        }
    }

    func testAuthoritiesOfTheFormPass() {
        for host in ["", "example.com", "EXAMPLE.com:8080", "example.com.", "127.0.0.1:19700", "localhost:",
                     "xn--bcher-kva.example", "a-b_c~d!$&'()*+,;=", "a%41b", "%2e", "[::1]", "[::1]:443",
                     "[fe80::1%25eth0]:80", "[v1.x]", ":80"] {
            XCTAssertTrue(HostSyntax.isValid(host), host)
        }
    }

    func testAuthoritiesOutsideTheFormAreRefused() {
        for host in ["a/b", "a b", "a\tb", "user@example.com", "a:x", "a:80:90", "::1", "[::1", "[]", "[::1]x",
                     "[::1]:x", "[a/b]", "a..b", "..", "a%4", "a%zz", "a%", "a\\b", "a?b", "a#b", "a\"b", "a<b",
                     "bücher.example", "a\u{0}b"] {
            XCTAssertFalse(HostSyntax.isValid(host), host)
        }
    }

    /// Names long enough for the eight-bytes-at-a-time path: dots in a row inside a word, across two words, and
    /// between a word and the bytes after it; a byte outside the fast set sends the rest a byte at a time.
    func testLongNamesAreJudgedAlikeWhereverTheirBytesFall() {
        for host in ["www.example-host.com:8080", "abcdefgh.ijklmnop.qrstuvwx", "ab_cdefgh.example", "abcdefg.h",
                     "abcdefgh.", "1234567.1234567.:1"] {
            XCTAssertTrue(HostSyntax.isValid(host), host)
        }
        for host in ["a..bcdefghij", "abcdefg..b", "abcdefg..bcdefgh", "abcdefghijklmno..pqrstuvw", "abcdefgh..x", "abcdefghijklmno..", "abcdefgh/ijklmnop",
                     "abcdefghijklmnop qrs", "ABCDEFGH@ijk"] {
            XCTAssertFalse(HostSyntax.isValid(host), host)
        }
    }

    /// Against a plain reading of the grammar, on many strings of the bytes that matter (a fixed sequence).
    func testAgreesWithAPlainReadingOfTheGrammar() {
        // Letters, digits, `-` and `.` weigh more, so that many strings run eight of them in a row.
        let alphabet = Array("a1-.a1-.a1-.F:%[]/_@ ".utf8)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        for _ in 0..<20_000 {
            let host = (0..<next(34)).map { _ in alphabet[next(alphabet.count)] }
            let judged = host.withUnsafeBytes { HostSyntax.isValid($0) }
            XCTAssertEqual(judged, Self.plainReading(host), String(decoding: host, as: UTF8.self))
        }
    }

    /// RFC 3986's `host [":" port]`, read the obvious way, with nginx's rule against `..` in a name.
    private static func plainReading(_ bytes: [UInt8]) -> Bool {
        let nameChars = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=".utf8)
        let hexDigits = Set("0123456789abcdefABCDEF".utf8)
        var rest: ArraySlice<UInt8>
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")), close > 1 else { return false }
            guard bytes[1..<close].allSatisfy({ nameChars.contains($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "%") })
            else { return false }
            rest = bytes[(close + 1)...]
        } else {
            let end = bytes.firstIndex(of: UInt8(ascii: ":")) ?? bytes.count
            let name = Array(bytes[..<end])
            var index = 0
            while index < name.count {
                if name[index] == UInt8(ascii: "%") {
                    guard index + 2 < name.count, hexDigits.contains(name[index + 1]), hexDigits.contains(name[index + 2])
                    else { return false }
                    index += 3
                    continue
                }
                guard nameChars.contains(name[index]) else { return false }
                if name[index] == UInt8(ascii: "."), index > 0, name[index - 1] == UInt8(ascii: ".") { return false }
                index += 1
            }
            rest = bytes[end...]
        }
        guard let colon = rest.first else { return true }
        return colon == UInt8(ascii: ":") && rest.dropFirst().allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }
}
