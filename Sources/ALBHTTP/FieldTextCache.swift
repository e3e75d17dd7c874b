import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The field names and values an event loop's HTTP/1 decoders made lately, handed out again when the same
/// bytes arrive, so that a repeated text costs a compare instead of an allocation.
///
/// Why: a `String` longer than 15 UTF-8 bytes lives on the heap, and heads repeat such texts all the time: a
/// backend's `Date` (the same for a second) and `Last-Modified`, a browser's `User-Agent`, `Accept` and
/// `Upgrade-Insecure-Requests` on every request of every connection. Behind nginx those two dates were 2 of a
/// keep-alive request's 8 allocations.
///
/// Two-way set-associative: a text's bytes pick one of ``setCount`` sets of two slots; a slot holding the same
/// bytes gives its string (a retain), and a new text takes the set's slot that was filled first, so two texts
/// that pick the same set (this second's `Date` and a `Last-Modified`, say) are both kept. Short texts (inline
/// in a `String`, no allocation to save) and long ones (over ``maximumLength``: a cookie, say, which would
/// hold memory for nothing) are made as before and not kept. A hit gives a string with exactly the bytes that
/// arrived, so a decoder using the cache returns the same heads as one without it.
///
/// One per event loop, shared by the loop's decoders both ways (``HTTP1LoopMemory``); loop-confined.
public final class FieldTextCache {
    private var slots: [String?]
    /// Per set, which of its two slots the next new text takes (bit `set`).
    private var nextSlot: UInt64 = 0

    static let setBits = 6
    static let setCount = 1 << FieldTextCache.setBits
    /// Texts up to this long are kept: the 128 slots hold at most 32 KiB per event loop.
    static let maximumLength = 256
    /// ``SmallASCIIText/layoutMatches``, read once.
    private let packsSmallText = SmallASCIIText.layoutMatches

    public init() {
        self.slots = Array(repeating: nil, count: 2 * Self.setCount)
    }

    /// The text of `bytes` (UTF-8; invalid sequences become U+FFFD, as `String(decoding:as:)` makes them).
    /// Most fields are short, and for them this is one compare and the packing of ``SmallASCIIText``.
    @inline(__always)
    func text(_ bytes: UnsafeRawBufferPointer) -> String {
        guard bytes.count > SmallASCIIText.capacity, bytes.count <= Self.maximumLength, let base = bytes.baseAddress
        else {
            if self.packsSmallText, let small = SmallASCIIText.string(bytes, layoutChecked: ()) { return small }
            return String(decoding: bytes, as: UTF8.self)
        }
        return self.keptText(base, count: bytes.count)
    }

    /// The texts of a field's name and value, in one call: the caller's reference to the cache is not retained
    /// across two (about 40 instructions a field, callgrind).
    @inline(never)
    func texts(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> (String, String) {
        (self.text(name), self.text(value))
    }

    private func keptText(_ base: UnsafeRawPointer, count: Int) -> String {
        let bytes = UnsafeRawBufferPointer(start: base, count: count)
        let set = Self.set(base, count: count)
        let first = 2 * set
        if let cached = self.slots[first], Self.has(cached, bytes: base, count: count) {
            return cached
        }
        if let cached = self.slots[first + 1], Self.has(cached, bytes: base, count: count) {
            return cached
        }
        let made = String(decoding: bytes, as: UTF8.self)
        let way = Int(truncatingIfNeeded: (self.nextSlot >> UInt64(set)) & 1)
        self.slots[first + way] = made
        self.nextSlot ^= 1 << UInt64(set)
        return made
    }

    /// Every byte counts: texts that matter here differ anywhere (two dates by their hours, agents by a
    /// version in the middle). Eight bytes at a time, the last word overlapping when the length is not a
    /// multiple of eight (`count` is over 15). A clash only costs the allocation the cache saves.
    static func set(_ bytes: UnsafeRawPointer, count: Int) -> Int {
        Int(truncatingIfNeeded: Self.hash(bytes, count: count) >> UInt64(64 - Self.setBits))
    }

    private static func hash(_ bytes: UnsafeRawPointer, count: Int) -> UInt64 {
        var hash = UInt64(count) &* 0x9E37_79B9_7F4A_7C15
        var offset = 0
        while offset + 8 <= count {
            hash = (hash ^ bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) &* 0xBF58_476D_1CE4_E5B9
            hash ^= hash >> 29
            offset += 8
        }
        if offset < count {
            hash = (hash ^ bytes.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)) &* 0xBF58_476D_1CE4_E5B9
        }
        return hash
    }

    private static func has(_ text: String, bytes: UnsafeRawPointer, count: Int) -> Bool {
        text.utf8.withContiguousStorageIfAvailable { utf8 in
            guard utf8.count == count, let start = utf8.baseAddress else { return false }
            return memcmp(start, bytes, count) == 0
        } ?? false
    }
}

@available(*, unavailable)
extension FieldTextCache: Sendable {}
