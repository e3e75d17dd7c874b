/// The form of a request's authority as the proxy takes it: a `Host` field, an HTTP/2 or HTTP/3 `:authority`, the
/// authority of an absolute-form target. RFC 9110 section 7.2 gives it as `uri-host [ ":" port ]` (RFC 3986
/// section 3.2): a name of unreserved characters, sub-delimiters and percent-encodings, or an IP literal in
/// brackets, then digits for the port.
///
/// Why it is checked: the listener routes by this value and passes it on to the backend as `Host`, where it may
/// name a directory, a virtual host or a cache key. A value outside the grammar (`a/b`, `a b`, `user@a`, `a:x`)
/// would be read one way here and another there. nginx answers 400 ("client sent invalid host header") to a host
/// with a `/`, a space or a control byte, and takes userinfo, `?`, `#`, `\` or a port that is not a number; the
/// proxy holds the whole grammar. Beyond it, a name with two dots in a row (`a..b`) is refused as nginx refuses it:
/// no host is named so, and `..` is a parent directory to a backend that makes a path of it. An empty value is
/// allowed, as RFC 9110 allows it for a target without an authority (nginx refuses it).
public enum HostSyntax {
    /// The unreserved characters and sub-delimiters (RFC 3986 sections 2.2 and 2.3: letters, digits,
    /// `-._~!$&'()*+,;=`) as two bit sets, bytes 0-63 and 64-127.
    static let nameCharsLow: UInt64 = 0x2bff_7fd2_0000_0000
    static let nameCharsHigh: UInt64 = 0x47ff_fffe_87ff_fffe

    @inline(__always)
    static func isNameChar(_ byte: UInt8) -> Bool {
        if byte < 64 { return (Self.nameCharsLow >> UInt64(byte)) & 1 == 1 }
        if byte < 128 { return (Self.nameCharsHigh >> UInt64(byte &- 64)) & 1 == 1 }
        return false
    }

    @inline(__always)
    private static func isHexDigit(_ byte: UInt8) -> Bool {
        byte &- UInt8(ascii: "0") < 10 || (byte | 0x20) &- UInt8(ascii: "a") < 6
    }

    /// Whether `bytes` is an authority of that form.
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let count = bytes.count
        var index = 0
        if count > 0, bytes[0] == UInt8(ascii: "[") {
            // An IP literal: IPv6 (with a zone's `%`) or IPvFuture, whose characters are all of these.
            index = 1
            while index < count, bytes[index] != UInt8(ascii: "]") {
                let byte = bytes[index]
                guard Self.isNameChar(byte) || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "%") else { return false }
                index += 1
            }
            guard index < count, index > 1 else { return false }
            index += 1
        } else {
            var previousWasDot = false
            // Eight bytes at a time while they are letters, digits, `-` and `.` (a name's bytes nearly always): a byte
            // at a time, a host such as `127.0.0.1:19703` cost about 230 instructions a request (callgrind).
            if let base = bytes.baseAddress {
                let high: UInt64 = 0x8080_8080_8080_8080
                while index + 8 <= count {
                    let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: index, as: UInt64.self))
                    let dotBits = (word & 0x7F7F_7F7F_7F7F_7F7F) ^ 0x2E2E_2E2E_2E2E_2E2E
                    let dots = ~((dotBits &+ 0x7F7F_7F7F_7F7F_7F7F) | dotBits) & ~word & high  // bit 7 where a `.`
                    guard HTTP1Syntax.lettersDigitsAndDashes(word) | dots == high else { break }
                    // Two dots in a row: within the word, or the last byte before it and its first.
                    if dots & (dots >> 8) != 0 || (previousWasDot && dots & 0x80 != 0) { return false }
                    previousWasDot = dots >> 63 != 0
                    index += 8
                }
            }
            while index < count {
                let byte = bytes[index]
                if Self.isNameChar(byte) {
                    let isDot = byte == UInt8(ascii: ".")
                    if isDot && previousWasDot { return false }
                    previousWasDot = isDot
                    index += 1
                } else if byte == UInt8(ascii: "%"), index + 2 < count, Self.isHexDigit(bytes[index + 1]),
                          Self.isHexDigit(bytes[index + 2]) {
                    previousWasDot = false
                    index += 3
                } else {
                    break
                }
            }
        }
        guard index < count else { return true }
        guard bytes[index] == UInt8(ascii: ":") else { return false }
        index += 1
        while index < count {
            guard bytes[index] &- UInt8(ascii: "0") < 10 else { return false }
            index += 1
        }
        return true
    }

    /// Whether `text` is an authority of that form.
    public static func isValid(_ text: String) -> Bool {
        var text = text  // `withUTF8` copies only a string without contiguous UTF-8 (a bridged one)
        return text.withUTF8 { Self.isValid(UnsafeRawBufferPointer($0)) }
    }
}
