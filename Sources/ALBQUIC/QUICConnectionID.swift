/// A QUIC connection ID: the key of the listener's connection table, and what a Version Negotiation
/// packet echoes back.
///
/// QUIC v1 connection IDs are at most 20 bytes (RFC 9000 section 17.2); those are stored inline, so
/// looking a datagram's DCID up in a table allocates nothing. Other versions may use up to 255 bytes
/// (RFC 8999); such an ID only ever appears in a header this listener answers with Version Negotiation, and
/// is kept in an array. The representation is canonical (inline exactly when 20 bytes or fewer), so the
/// synthesized `Hashable` compares the bytes.
public struct QUICConnectionID: Hashable, Sendable {
    /// The longest connection ID QUIC v1 allows.
    public static let maxV1Length = 20
    /// The longest any QUIC version's long header can carry (a one-byte length).
    public static let maxLength = 255

    private typealias Inline = (UInt64, UInt64, UInt32)
    private var word0: UInt64 = 0
    private var word1: UInt64 = 0
    private var word2: UInt32 = 0
    private var inlineCount: UInt8 = 0
    private var long: [UInt8]?

    /// The empty connection ID (zero bytes), a valid ID in QUIC.
    public init() {}

    /// Copies the bytes; `nil` when there are more than ``maxLength``.
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count <= Self.maxLength else { return nil }
        if bytes.count > Self.maxV1Length {
            long = Array(bytes)
            return
        }
        var words: Inline = (0, 0, 0)
        withUnsafeMutableBytes(of: &words) { destination in
            if let base = bytes.baseAddress, !bytes.isEmpty {
                destination.baseAddress?.copyMemory(from: base, byteCount: bytes.count)
            }
        }
        (word0, word1, word2) = words
        inlineCount = UInt8(bytes.count)
    }

    /// Copies the bytes; `nil` when there are more than ``maxLength``.
    public init?(_ bytes: some Collection<UInt8>) {
        let array = Array(bytes)
        guard let id = array.withUnsafeBytes({ QUICConnectionID($0) }) else { return nil }
        self = id
    }

    public var count: Int { long?.count ?? Int(inlineCount) }
    public var isEmpty: Bool { count == 0 }

    /// Calls `body` with the ID's bytes, valid only during the call.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        if let long { return try long.withUnsafeBytes(body) }
        let words: Inline = (word0, word1, word2)
        let count = Int(inlineCount)
        return try Swift.withUnsafeBytes(of: words) { try body(UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
}

extension QUICConnectionID: CustomStringConvertible {
    /// Lowercase hex, as ngtcp2's logs and qlog print connection IDs.
    public var description: String {
        withUnsafeBytes { bytes in
            let digits = Array("0123456789abcdef".utf8)
            var text: [UInt8] = []
            text.reserveCapacity(bytes.count * 2)
            for byte in bytes {
                text.append(digits[Int(byte >> 4)])
                text.append(digits[Int(byte & 0x0f)])
            }
            return String(decoding: text, as: UTF8.self)
        }
    }
}
