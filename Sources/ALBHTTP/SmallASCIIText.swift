/// Short ASCII text made into a `String` without the standard library's checks, which a field line has
/// already been through.
///
/// On 64-bit platforms a `String` of up to 15 UTF-8 bytes holds them inline: the bytes in order from the
/// first of its two words, and in the last byte of the second word a discriminator (immortal, small, ASCII:
/// `0xE0`) with the count in its low four bits. That form is what `String(decoding:as:)` makes for such
/// bytes, and it is the only form two equal strings of that length can have, so packing the same bits
/// makes the same value. The layout is part of the standard library's ABI on Apple platforms and the
/// same code on Linux; even so it is checked once, against strings the library made, before it is used
/// (``layoutMatches``), and a different layout only means every caller takes the library's way.
public enum SmallASCIIText {
    /// The most bytes a `String` holds inline.
    public static let capacity = 15

    /// A string of `bytes`, or nil when they are more than ``capacity``, are not all ASCII, or the layout
    /// check failed.
    @inlinable @inline(__always)
    public static func string(_ bytes: UnsafeRawBufferPointer) -> String? {
        Self.layoutMatches ? Self.string(bytes, layoutChecked: ()) : nil
    }

    /// ``string(_:)`` for a caller that read ``layoutMatches`` once and kept it (a global's every read costs a
    /// call to check that it is initialised).
    @inlinable @inline(__always)
    public static func string(_ bytes: UnsafeRawBufferPointer, layoutChecked: Void) -> String? {
        guard bytes.count <= Self.capacity, let words = Self.words(bytes) else { return nil }
        return Self.string(words: words)
    }

    /// The string whose two words are `words` (an inline ASCII form). Stored over an empty string's words, not
    /// cast: a cast gives a borrowed string that is then copied, a `swift_bridgeObjectRetain` call for every
    /// text (about 14 instructions, callgrind), though an inline string holds no reference.
    @inlinable @inline(__always)
    static func string(words: (UInt64, UInt64)) -> String {
        var text = ""
        withUnsafeMutableBytes(of: &text) { $0.storeBytes(of: words, as: (UInt64, UInt64).self) }
        return text
    }

    /// The two words of `text` and its length when it is held inline and is ASCII (the bytes in memory order from
    /// the first word; the second word's last byte is not text), nil for any other string. For a caller that read
    /// ``layoutMatches`` and found it true.
    @inlinable @inline(__always)
    public static func inlineWords(_ text: String, layoutChecked: Void) -> (UInt64, UInt64, Int)? {
        let (first, second) = unsafeBitCast(text, to: (UInt64, UInt64).self)
        // The top four bits say immortal, ASCII, small and not foreign: no other form has them.
        guard second >> 60 == 0xE else { return nil }
        return (first, second, Int(truncatingIfNeeded: (second >> 56) & 0xF))
    }

    /// `text` with its ASCII capitals lowered, when it is held inline and is ASCII (a field name nearly always):
    /// the bytes are lowered in place in the string's two words, eight at a time. Nil for any other string.
    public static func lowercased(_ text: String) -> String? {
        guard Self.layoutMatches, let (first, second, _) = Self.inlineWords(text, layoutChecked: ()) else { return nil }
        return Self.string(words: Self.lowercased(words: (first, second)))
    }

    /// An inline form's two words with the text's ASCII capitals lowered, eight bytes at a time; the second word's
    /// last byte (the discriminator, not text) as it was.
    @inline(__always)
    static func lowercased(words: (UInt64, UInt64)) -> (UInt64, UInt64) {
        let discriminator = words.1 & (0xFF << 56)
        return (HTTP1Syntax.lowercasedASCII(words.0), HTTP1Syntax.lowercasedASCII(words.1 & ~(0xFF << 56)) | discriminator)
    }

    /// Whether the text whose inline words are `first` and `second` (``inlineWords(_:layoutChecked:)``), from byte
    /// `start` to its end, is a token in lowercase: at least one byte, each a token character other than `A`-`Z`
    /// (RFC 9110 section 5.6.2; what an HTTP/2 field name must be, RFC 9113 section 8.2.1). One shift and test of
    /// a bit set a byte, on the words in registers: walking the string's UTF-8 view cost about 160 instructions a
    /// name (callgrind).
    @inlinable
    public static func isLowercaseToken(first: UInt64, second: UInt64, count: Int, from start: Int) -> Bool {
        guard count > start else { return false }
        for index in start..<count {
            let word = index < 8 ? first : second
            let byte = (word >> UInt64(8 * (index & 7))) & 0xFF
            let allowed = byte < 64 ? Self.lowercaseTokenBytesLow >> byte : Self.lowercaseTokenBytesHigh >> (byte &- 64)
            guard allowed & 1 == 1 else { return false }
        }
        return true
    }

    /// Token characters without `A`-`Z`, bytes 0-63 and 64-127 as bit sets (an inline text is ASCII: no byte is
    /// 128 or more).
    @usableFromInline static let lowercaseTokenBytesLow: UInt64 = 0x03ff_6cfa_0000_0000
    @usableFromInline static let lowercaseTokenBytesHigh: UInt64 = 0x57ff_ffff_c000_0000

    /// The two words of a small ASCII string of `bytes` (at most 15), or nil when a byte is not ASCII. The
    /// bytes are read in at most two loads a word, overlapping where the count is not a multiple of the
    /// load's size (the overlap reads the same bytes twice and ORs them into place), never past the end.
    @inlinable @inline(__always)
    static func words(_ bytes: UnsafeRawBufferPointer) -> (UInt64, UInt64)? {
        let count = bytes.count
        guard let base = bytes.baseAddress else { return (0, 0xE0 << 56) }
        var first: UInt64 = 0
        var second: UInt64 = 0
        if count >= 8 {
            first = base.loadUnaligned(as: UInt64.self)
            // The last eight bytes, shifted down so that byte 8 lands lowest (nothing left when count is 8).
            second = base.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self) >> (8 * (16 - count))
        } else if count >= 4 {
            let low = UInt64(base.loadUnaligned(as: UInt32.self))
            let high = UInt64(base.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self))
            first = low | high << (8 * (count - 4))
        } else {
            for index in 0..<count {
                first |= UInt64(base.load(fromByteOffset: index, as: UInt8.self)) << (8 * index)
            }
        }
        guard (first | second) & 0x8080_8080_8080_8080 == 0 else { return nil }
        return (first, second | (0xE0 | UInt64(count)) << 56)
    }

    /// Whether strings the standard library makes have the layout ``words(_:)`` writes: compared bit for
    /// bit at every length from 0 to 15, on a little-endian 64-bit platform. Reading a valid string's bits
    /// is safe whatever the layout; only a match lets packed words be used as a string.
    public static let layoutMatches: Bool = {
        guard MemoryLayout<String>.size == 16, 1.littleEndian == 1 else { return false }
        let sample = Array("Host: example.co".utf8)
        return (0...Self.capacity).allSatisfy { count in
            sample.withUnsafeBytes { all in
                let bytes = UnsafeRawBufferPointer(rebasing: all[0..<count])
                let made = String(decoding: bytes, as: UTF8.self)
                return Self.words(bytes).map { unsafeBitCast(made, to: (UInt64, UInt64).self) == $0 } ?? false
            }
        }
    }()
}
