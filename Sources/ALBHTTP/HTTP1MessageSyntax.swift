import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// What HTTP/1 requests and responses have in common on the wire (RFC 9112), decoded in one place for both
// strict decoders (``StrictHTTPRequestDecoder`` at the edge, ``StrictHTTPResponseDecoder`` on backend
// connections): CRLF lines, field lines, the framing the fields give a body, and a body by length or in
// chunks with trailers. Each decoder keeps its own start line and its own rules about a body without framing.

/// Where a strict decoder delivers the parts of a message as it decodes them: ``HTTPRequestDecoderOutput``
/// (requests, `HTTPServerRequestPart`) or ``HTTPResponseDecoderOutput`` (responses, `HTTPClientResponsePart`).
public protocol HTTP1PartOutput {
    associatedtype Head: Equatable & Sendable
    func received(_ part: consuming HTTPPart<Head, ByteBuffer>)
}

/// Why a strict HTTP/1 decoder refused its input. The reason is for logs only.
public struct HTTP1SyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// Malformed or ambiguous bytes: bad characters, bad framing, anything that could split a message.
        case malformed
        /// A head or trailer section over its byte or field limit.
        case tooLarge
    }

    public let kind: Kind
    public let reason: String

    static func malformed(_ reason: String) -> HTTP1SyntaxError {
        HTTP1SyntaxError(kind: .malformed, reason: reason)
    }

    static func tooLarge(_ reason: String) -> HTTP1SyntaxError {
        HTTP1SyntaxError(kind: .tooLarge, reason: reason)
    }

    public var description: String {
        switch self.kind {
        case .malformed: return "malformed HTTP/1: \(self.reason)"
        case .tooLarge: return "HTTP/1 head too large: \(self.reason)"
        }
    }
}

/// The limits a strict decoder puts on a head (start line plus header section) and on each trailer section.
public struct HTTP1HeadLimits: Sendable, Equatable {
    /// Start line plus header section, in bytes, CRLFs included (the final empty line too).
    public var maxHeaderBytes: Int
    /// Header fields per message (trailer fields are counted separately with the same limit).
    public var maxHeaderCount: Int
    /// A chunk-size line (size plus extensions) may not be longer than this.
    public var maxChunkLineBytes: Int

    /// The defaults are the edge's, for requests from clients (``StrictHTTPRequestDecoder``).
    public init(maxHeaderBytes: Int = 65536, maxHeaderCount: Int = 100, maxChunkLineBytes: Int = 4096) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.maxChunkLineBytes = maxChunkLineBytes
    }
}

/// The CRLF lines of one message's head or trailer section, and its field lines. It remembers how far an
/// unfinished line has been scanned, so input arriving byte by byte costs O(n), and counts the section's
/// bytes and fields against the limits as it goes.
struct HTTP1LineReader {
    struct Line {
        /// Bytes before the CRLF.
        var content: Int
        /// Bytes including the CRLF.
        var total: Int
    }

    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")

    /// Bytes of the current head (or trailer section) consumed so far.
    private(set) var sectionBytes = 0
    /// How far the current, unfinished line has been scanned for LF.
    private var scanned = 0
    private var fieldCount = 0
    /// Field lines read and checked but left in the input until the section ends (``readFieldLines(_:limits:)``):
    /// the bytes they take from its start.
    private var linesHeld = 0
    /// What the current section's fields said so far.
    private(set) var summary = HTTP1HeadSummary()
    /// Where field names and values longer than a `String` holds inline come from when they repeat.
    let fieldTexts: FieldTextCache?

    init(fieldTexts: FieldTextCache? = nil) {
        self.fieldTexts = fieldTexts
    }

    enum BeforeMessage {
        case needMoreData
        /// An empty line was consumed.
        case skippedEmptyLine
        /// The next byte starts a message.
        case messageStarts
    }

    /// Between messages: an empty line (CRLF) is skipped, as RFC 9112 section 2.2 asks of a server before a
    /// request line and llhttp does before a response too (a backend's stray CRLF after a body). A CR not
    /// followed by LF is refused.
    static func skipEmptyLine(_ buffer: inout ByteBuffer) throws -> BeforeMessage {
        // Read in place: through `readableBytesView` this took about 140 instructions a message, most of them
        // making and destroying the view (callgrind).
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return .needMoreData }
        guard first == Self.cr else { return .messageStarts }
        guard buffer.readableBytes >= 2 else { return .needMoreData }
        guard buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) == Self.lf else {
            throw HTTP1SyntaxError.malformed("bare CR")
        }
        buffer.moveReaderIndex(forwardBy: 2)
        return .skippedEmptyLine
    }

    /// A new head or trailer section begins; `request`: a request's head.
    mutating func startSection(request: Bool = false) {
        self.sectionBytes = 0
        self.fieldCount = 0
        self.scanned = 0
        self.linesHeld = 0
        self.summary = HTTP1HeadSummary(readsRequest: request)
    }

    /// The next line of the section, or nil until it is complete. Counts against `limit` together with the
    /// section's lines before it.
    mutating func nextSectionLine(_ buffer: ByteBuffer, limit: Int) throws -> Line? {
        try self.nextLine(buffer, used: self.sectionBytes, limit: limit, overLimit: Self.sectionTooLarge)
    }

    /// A chunk-size line, which counts against no section.
    mutating func nextChunkLine(_ buffer: ByteBuffer, limit: Int) throws -> Line? {
        try self.nextLine(buffer, used: 0, limit: limit) { _ in HTTP1SyntaxError.malformed("chunk size line too long") }
    }

    /// Consumes a line of the section.
    mutating func consume(_ buffer: inout ByteBuffer, _ line: Line) {
        buffer.moveReaderIndex(forwardBy: line.total)
        self.sectionBytes += line.total
    }

    enum FieldLine {
        case field(name: String, value: String)
        /// The empty line that ends a header or trailer section.
        case endOfSection
    }

    /// Consumes the field lines of a header section as they arrive, into `fields`: true once its empty line is
    /// read.
    ///
    /// Every complete line at hand is read through one view of the buffer's bytes, consumed when the view ends:
    /// a view of its own for each line and each field retained and released the buffer's storage each time,
    /// and the field went into the array straight from the parse (through ``FieldLine`` each cost two more
    /// retains and releases of its strings; callgrind).
    mutating func readFields(_ buffer: inout ByteBuffer, into fields: inout [(String, String)],
                             limits: HTTP1HeadLimits) throws -> Bool {
        var consumed = 0
        defer { buffer.moveReaderIndex(forwardBy: consumed) }
        // Read once for the loop and borrowed by each field's parse (see `parseField`).
        let texts = self.fieldTexts
        return try buffer.withUnsafeReadableBytes { bytes in
            while let line = try self.nextLine(in: bytes, from: consumed, used: self.sectionBytes,
                                               limit: limits.maxHeaderBytes, overLimit: Self.sectionTooLarge) {
                if line.content > 0 {
                    let content = UnsafeRawBufferPointer(rebasing: bytes[consumed..<consumed + line.content])
                    fields.append(try self.parseField(content, texts: texts, maxCount: limits.maxHeaderCount))
                }
                consumed += line.total
                self.sectionBytes += line.total
                if line.content == 0 { return true }
            }
            return false
        }
    }

    /// As ``readFields(_:into:limits:)``, each field checked and summarised the same way, but the lines are kept as
    /// they arrived (``HTTP1FieldLines``) and no field becomes a string.
    mutating func readFields(_ buffer: inout ByteBuffer, into lines: inout HTTP1FieldLines,
                             limits: HTTP1HeadLimits) throws -> Bool {
        var consumed = 0
        defer { buffer.moveReaderIndex(forwardBy: consumed) }
        return try buffer.withUnsafeReadableBytes { bytes in
            // The field lines read here lie one after the other from the start, CRLFs and all: copied in one
            // piece (a copy each cost about 110 instructions more a line, callgrind).
            var end = 0
            while let line = try self.nextLine(in: bytes, from: consumed, used: self.sectionBytes,
                                               limit: limits.maxHeaderBytes, overLimit: Self.sectionTooLarge) {
                if line.content == 0 {
                    consumed += line.total
                    self.sectionBytes += line.total
                    lines.append(UnsafeRawBufferPointer(rebasing: bytes[0..<end]))
                    return true
                }
                _ = try self.checkField(UnsafeRawBufferPointer(rebasing: bytes[consumed..<consumed + line.content]),
                                        maxCount: limits.maxHeaderCount)
                consumed += line.total
                end = consumed
                self.sectionBytes += line.total
            }
            lines.append(UnsafeRawBufferPointer(rebasing: bytes[0..<end]))
            return false
        }
    }

    /// As ``readFields(_:into:limits:)``, each field checked and summarised the same way, but the lines stay in
    /// `buffer`, unconsumed, until the empty line after them arrives: then they come back as one slice of it (no
    /// copy, no string) and are consumed with the empty line. Nil until then. A client connection so holds nothing
    /// of its own for a head between reads: the lines wait in its unread input, as an unfinished line does.
    mutating func readFieldLines(_ buffer: inout ByteBuffer, limits: HTTP1HeadLimits) throws -> HTTP1FieldLines? {
        var end = self.linesHeld
        let complete = try buffer.withUnsafeReadableBytes { bytes -> Bool in
            while let line = try self.nextLine(in: bytes, from: end, used: self.sectionBytes,
                                               limit: limits.maxHeaderBytes, overLimit: Self.sectionTooLarge) {
                self.sectionBytes += line.total
                if line.content == 0 { return true }
                _ = try self.checkField(UnsafeRawBufferPointer(rebasing: bytes[end..<end + line.content]),
                                        maxCount: limits.maxHeaderCount)
                end += line.total
            }
            return false
        }
        guard complete else {
            self.linesHeld = end
            return nil
        }
        self.linesHeld = 0
        guard let lines = buffer.readSlice(length: end) else { throw HTTP1SyntaxError.malformed("field lines lost") }
        buffer.moveReaderIndex(forwardBy: 2)  // the empty line
        return HTTP1FieldLines(bytes: lines)
    }

    /// Consumes the next field line of a header or trailer section, or the empty line after it; nil until
    /// the line is complete.
    mutating func nextField(_ buffer: inout ByteBuffer, limits: HTTP1HeadLimits) throws -> FieldLine? {
        guard let line = try self.nextSectionLine(buffer, limit: limits.maxHeaderBytes) else { return nil }
        if line.content == 0 {
            self.consume(&buffer, line)
            return .endOfSection
        }
        let (name, value) = try buffer.withUnsafeReadableBytes { bytes in
            try self.parseField(UnsafeRawBufferPointer(rebasing: bytes[0..<line.content]), texts: self.fieldTexts,
                                maxCount: limits.maxHeaderCount)
        }
        self.consume(&buffer, line)
        return .field(name: name, value: value)
    }

    private static func sectionTooLarge(_ limit: Int) -> HTTP1SyntaxError {
        HTTP1SyntaxError.tooLarge("more than \(limit) bytes")
    }

    /// Finds the next CRLF-terminated line without consuming it. See ``nextLine(in:from:used:limit:overLimit:)``.
    private mutating func nextLine(
        _ buffer: ByteBuffer,
        used: Int,
        limit: Int,
        overLimit: (Int) -> HTTP1SyntaxError
    ) throws -> Line? {
        try buffer.withUnsafeReadableBytes { bytes in
            try self.nextLine(in: bytes, from: 0, used: used, limit: limit, overLimit: overLimit)
        }
    }

    /// Finds the next CRLF-terminated line of `bytes`, starting at `start`, without consuming it. Refuses a
    /// bare LF, a CR inside the line, and lines that would take the section past `limit` (checked before the
    /// line is complete, so an endless line is refused as soon as it crosses the limit).
    private mutating func nextLine(
        in bytes: UnsafeRawBufferPointer,
        from start: Int,
        used: Int,
        limit: Int,
        overLimit: (Int) -> HTTP1SyntaxError
    ) throws -> Line? {
        let available = bytes.count - start
        let scanned = self.scanned
        // memchr: a head is a few hundred bytes per message, scanned for LF and then CR on every line.
        guard scanned < available, let base = bytes.baseAddress,
            let hit = memchr(base + start + scanned, Int32(Self.lf), available - scanned)
        else {
            self.scanned = available
            if used + available > limit { throw overLimit(limit) }
            return nil
        }
        let lineStart = base + start
        let lf = lineStart.distance(to: UnsafeRawPointer(hit))
        self.scanned = 0
        let total = lf + 1
        if used + total > limit { throw overLimit(limit) }
        guard lf >= 1, lineStart.load(fromByteOffset: lf - 1, as: UInt8.self) == Self.cr else {
            throw HTTP1SyntaxError.malformed("bare LF")
        }
        if memchr(lineStart, Int32(Self.cr), lf - 1) != nil { throw HTTP1SyntaxError.malformed("bare CR") }
        return Line(content: lf - 1, total: total)
    }

    /// One field line (`name: value`, RFC 9112 section 5), `bytes` without its CRLF: a token for a name, no
    /// whitespace before the colon, no obsolete line folding, a value of visible characters, spaces and tabs,
    /// trimmed. Its texts come from `texts` when there is a cache.
    private mutating func parseField(_ bytes: UnsafeRawBufferPointer, texts: FieldTextCache?,
                                     maxCount: Int) throws -> (name: String, value: String) {
        let (name, value) = try self.checkField(bytes, maxCount: maxCount)
        // Optional chaining borrows the cache; binding it (`if let`) retained and released it a field.
        return texts?.texts(name: name, value: value) ?? (String(shortUTF8: name), String(shortUTF8: value))
    }

    /// A field line's name and value (without the spaces and tabs around it), checked, counted and summarised.
    @inline(__always)
    private mutating func checkField(_ bytes: UnsafeRawBufferPointer,
                                     maxCount: Int) throws -> (name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        self.fieldCount += 1
        if self.fieldCount > maxCount {
            throw HTTP1SyntaxError.tooLarge("more than \(maxCount) fields")
        }
        // One pass over the line's bytes by pointer: through slices and `allSatisfy` this took about 500
        // instructions a field (callgrind), more than the rest of the line reader.
        let length = bytes.count
        guard length > 0, let base = bytes.baseAddress else {
            throw HTTP1SyntaxError.malformed("malformed header field name")
        }
        if HTTP1Syntax.isWhitespace(bytes[0]) {
            throw HTTP1SyntaxError.malformed("obsolete line folding")
        }
        // The name runs to the first byte that is not a token character, which must be the colon.
        let colon = HTTP1Syntax.tokenPrefixLength(bytes)
        guard colon > 0, colon < length, bytes[colon] == UInt8(ascii: ":") else {
            throw HTTP1SyntaxError.malformed("malformed header field name")
        }
        // Trimmed here rather than by `HTTP1Syntax.withoutWhitespace`: through it, about 30 instructions a request
        // more (callgrind).
        var valueStart = colon + 1
        var valueEnd = length
        while valueStart < valueEnd, HTTP1Syntax.isWhitespace(bytes[valueStart]) { valueStart += 1 }
        while valueEnd > valueStart, HTTP1Syntax.isWhitespace(bytes[valueEnd - 1]) { valueEnd -= 1 }
        let name = UnsafeRawBufferPointer(start: base, count: colon)
        let value = UnsafeRawBufferPointer(start: base + valueStart, count: valueEnd - valueStart)
        guard HTTP1Syntax.areFieldValueChars(value) else {
            throw HTTP1SyntaxError.malformed("invalid character in header field value")
        }
        try self.summary.read(position: self.fieldCount - 1, name: name, value: value)
        return (name, value)
    }
}

/// How a message's fields frame its body (RFC 9112 section 6), before the rules of its kind: a request
/// without either field has no body, a response without either is delimited by the connection's close.
enum HTTP1BodyFraming: Equatable {
    /// Neither `Transfer-Encoding` nor `Content-Length`.
    case unframed
    case length(Int)
    case chunked

    /// Refuses both fields together, a transfer coding other than exactly `chunked`, an invalid length and
    /// differing lengths. Equal repeated lengths are folded into one field in `fields`: never passed on as
    /// sent (RFC 9110 section 8.6), as HAProxy sends them. What the two fields said was read from their
    /// bytes as they were decoded (``HTTP1HeadSummary/framing``): the fields are searched only to fold.
    static func of(_ fields: inout [(String, String)], summary: inout HTTP1HeadSummary) throws -> HTTP1BodyFraming {
        let framing = summary.framing
        if framing.transferEncodings > 0 && framing.contentLengths > 0 {
            throw HTTP1SyntaxError.malformed("both Content-Length and Transfer-Encoding")
        }
        if framing.transferEncodings > 0 {
            guard framing.transferEncodings == 1, framing.isChunked else {
                throw HTTP1SyntaxError.malformed("unsupported Transfer-Encoding")
            }
            return .chunked
        }
        guard framing.contentLengths > 0 else { return .unframed }
        guard framing.lengthsValid, let length = framing.length else {
            throw HTTP1SyntaxError.malformed("invalid Content-Length")
        }
        if framing.lengthsDiffer { throw HTTP1SyntaxError.malformed("differing Content-Length values") }
        if framing.foldsLengths {
            // As `HTTPHeaders.replaceOrAdd` does it: the fields go, one comes last.
            fields.removeAll { HTTP1Syntax.equalsIgnoringASCIICase($0.0, "content-length") }
            fields.append(("content-length", String(length)))
            summary.positionsKnown = false
        }
        return .length(length)
    }

    /// The decoder of a body so framed, or nil for none: a length of zero, or no framing when
    /// `unframed` is nil (a request; a response's body then lasts until the close).
    func body(unframed: HTTP1BodyDecoder.State?) -> HTTP1BodyDecoder? {
        switch self {
        case .unframed: return unframed.map(HTTP1BodyDecoder.init)
        case .length(0): return nil
        case .length(let length): return HTTP1BodyDecoder(.fixed(remaining: length))
        case .chunked: return HTTP1BodyDecoder(.chunkSize)
        }
    }
}

/// A message body as it arrives: a length's worth of bytes, chunks and their trailers, or everything until
/// the connection closes. Streamed, never buffered whole; transfer codings other than `chunked` are refused
/// before a body starts (``HTTP1BodyFraming``).
struct HTTP1BodyDecoder {
    enum State {
        case fixed(remaining: Int)
        /// A response without framing: its body ends when the input does.
        case untilClose
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
    }

    enum Step: Equatable {
        /// Decode again: the buffer may hold more.
        case `continue`
        case needMoreData
        /// The body and its message are over (the end was delivered).
        case ended
    }

    private var state: State
    private var trailers = HTTPHeaders()

    /// A body with a length of more than zero, chunked, or delimited by the close.
    init(_ state: State) {
        self.state = state
    }

    /// Whether the body ends with the input (a close-delimited response).
    var endsWithInput: Bool {
        if case .untilClose = self.state { return true }
        return false
    }

    /// One step: delivers the data it read and the message's end to `output`.
    mutating func decode(
        _ buffer: inout ByteBuffer,
        lines: inout HTTP1LineReader,
        limits: HTTP1HeadLimits,
        into output: some HTTP1PartOutput
    ) throws -> Step {
        switch self.state {
        case .fixed(let remaining):
            guard buffer.readableBytes > 0, let slice = buffer.readSlice(length: min(remaining, buffer.readableBytes))
            else { return .needMoreData }
            let left = remaining - slice.readableBytes
            self.state = .fixed(remaining: left)
            output.received(.body(slice))
            if left > 0 { return .continue }
            output.received(.end(nil))
            return .ended

        case .untilClose:
            guard buffer.readableBytes > 0, let slice = buffer.readSlice(length: buffer.readableBytes) else {
                return .needMoreData
            }
            output.received(.body(slice))
            return .continue

        case .chunkSize:
            guard let line = try lines.nextChunkLine(buffer, limit: limits.maxChunkLineBytes) else {
                return .needMoreData
            }
            let size = try HTTP1Syntax.parseChunkSize(buffer, length: line.content)
            buffer.moveReaderIndex(forwardBy: line.total)
            if size == 0 {
                lines.startSection()
                self.trailers = HTTPHeaders()
                self.state = .trailers
            } else {
                self.state = .chunkData(remaining: size)
            }
            return .continue

        case .chunkData(let remaining):
            guard buffer.readableBytes > 0, let slice = buffer.readSlice(length: min(remaining, buffer.readableBytes))
            else { return .needMoreData }
            let left = remaining - slice.readableBytes
            self.state = left == 0 ? .chunkDataEnd : .chunkData(remaining: left)
            output.received(.body(slice))
            return .continue

        case .chunkDataEnd:
            guard buffer.readableBytes >= 2 else {
                if let first = buffer.readableBytesView.first, first != HTTP1LineReader.cr {
                    throw HTTP1SyntaxError.malformed("chunk data not followed by CRLF")
                }
                return .needMoreData
            }
            guard buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) == 0x0D0A else {
                throw HTTP1SyntaxError.malformed("chunk data not followed by CRLF")
            }
            buffer.moveReaderIndex(forwardBy: 2)
            self.state = .chunkSize
            return .continue

        case .trailers:
            switch try lines.nextField(&buffer, limits: limits) {
            case nil:
                return .needMoreData
            case .field(let name, let value):
                self.trailers.add(name: name, value: value)
                return .continue
            case .endOfSection:
                let trailers = self.trailers
                self.trailers = HTTPHeaders()
                output.received(.end(trailers.isEmpty ? nil : trailers))
                return .ended
            }
        }
    }
}

/// Character classes and numbers of HTTP/1 (RFC 9110 section 5.6, RFC 9112 section 7.1).
enum HTTP1Syntax {
    /// Token characters (RFC 9110 section 5.6.2: ALPHA, DIGIT and `!#$%&'*+-.^_`|~`) as two bit sets, bytes
    /// 0-63 and 64-127: one shift and test per byte of every field name.
    private static let tokenCharsLow: UInt64 = 0x03ff_6cfa_0000_0000
    private static let tokenCharsHigh: UInt64 = 0x57ff_ffff_c7ff_fffe

    static func isTokenChar(_ byte: UInt8) -> Bool {
        if byte < 64 { return (Self.tokenCharsLow >> UInt64(byte)) & 1 == 1 }
        if byte < 128 { return (Self.tokenCharsHigh >> UInt64(byte &- 64)) & 1 == 1 }
        return false
    }

    /// ``isTokenChar(_:)`` by byte value, for the loops over every byte of every field name: one load a byte
    /// where the bit sets take two compares and a shift (callgrind: 12 instructions a byte in a loop). Made once
    /// and kept for the process; never written after.
    nonisolated(unsafe) static let tokenTable: UnsafePointer<Bool> = {
        let table = UnsafeMutablePointer<Bool>.allocate(capacity: 256)
        for byte in 0..<256 {
            table[byte] = Self.isTokenChar(UInt8(byte))
        }
        return UnsafePointer(table)
    }()

    /// A token (RFC 9110 section 5.6.2): at least one byte, each a token character.
    static func areTokenChars(_ bytes: UnsafeRawBufferPointer) -> Bool {
        !bytes.isEmpty && Self.tokenPrefixLength(bytes) == bytes.count
    }

    /// How many of the leading bytes are token characters: eight at a time while they are letters, digits and
    /// `-` (all of nearly every field name), then one at a time through ``tokenTable`` from the first other
    /// byte. A byte at a time all the way cost about 7 instructions a byte (callgrind), a field name's
    /// largest cost after its strings.
    @inline(__always)
    static func tokenPrefixLength(_ bytes: UnsafeRawBufferPointer) -> Int {
        guard let base = bytes.baseAddress else { return 0 }
        var index = 0
        while index + 8 <= bytes.count {
            let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            let common = Self.lettersDigitsAndDashes(word)
            guard common == 0x8080_8080_8080_8080 else {
                // The first byte that is not one of them, in memory order.
                index += (~common & 0x8080_8080_8080_8080).trailingZeroBitCount / 8
                break
            }
            index += 8
        }
        let tokens = Self.tokenTable
        while index < bytes.count, tokens[Int(base.load(fromByteOffset: index, as: UInt8.self))] { index += 1 }
        return index
    }

    /// Bit 7 of each byte of `word` set where the byte is an ASCII letter, digit or `-`, clear elsewhere. Worked
    /// on the low seven bits of each byte, so no sum carries into the next byte (each stays below 0x100), and
    /// masked to the bytes below 0x80. A byte is in a range when adding `0x80 - low` sets its bit 7 and adding
    /// `0x7F - high` does not.
    @inline(__always)
    static func lettersDigitsAndDashes(_ word: UInt64) -> UInt64 {
        let high: UInt64 = 0x8080_8080_8080_8080
        let sevenBits = word & 0x7F7F_7F7F_7F7F_7F7F
        let folded = sevenBits | 0x2020_2020_2020_2020  // capitals to small letters; no other byte lands in a-z
        let letters = (folded &+ 0x1F1F_1F1F_1F1F_1F1F) & ~(folded &+ 0x0505_0505_0505_0505)  // 0x61-0x7A
        let digits = (sevenBits &+ 0x5050_5050_5050_5050) & ~(sevenBits &+ 0x4646_4646_4646_4646)  // 0x30-0x39
        let dashBits = sevenBits ^ 0x2D2D_2D2D_2D2D_2D2D
        let dashes = ~((dashBits &+ 0x7F7F_7F7F_7F7F_7F7F) | dashBits)  // bit 7 set where the byte was 0x2D
        return (letters | digits | dashes) & ~word & high
    }

    /// Whether every byte is ``isFieldValueChar(_:)``: eight at a time while none is below 0x20 or 0x7F (a
    /// value's bytes usually are none), each on its own from a word that may hold one (a tab is allowed). The
    /// bytes after the last whole word are one more word, overlapping the one before (or two overlapping halves
    /// of four when there are fewer than eight in all): a byte at a time there cost about 30 instructions a
    /// field (callgrind).
    static func areFieldValueChars(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let count = bytes.count
        var index = 0
        if let base = bytes.baseAddress, count >= 4 {
            while index + 8 <= count {
                guard Self.holdsOnlyFieldValueChars(base.loadUnaligned(fromByteOffset: index, as: UInt64.self)) else {
                    return Self.areFieldValueCharsOneByOne(bytes, from: index)
                }
                index += 8
            }
            guard index < count else { return true }
            let last = count >= 8
                ? base.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
                : UInt64(base.loadUnaligned(as: UInt32.self))
                    | UInt64(base.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)) << 32
            if Self.holdsOnlyFieldValueChars(last) { return true }
        }
        return Self.areFieldValueCharsOneByOne(bytes, from: index)
    }

    /// No byte of `word` is below 0x20 or 0x7F: exact as a yes or no, whatever the borrows between bytes (the
    /// "has less than" and "has zero" word tricks).
    @inline(__always)
    private static func holdsOnlyFieldValueChars(_ word: UInt64) -> Bool {
        let below = (word &- 0x2020_2020_2020_2020) & ~word & 0x8080_8080_8080_8080
        let delete = word ^ 0x7F7F_7F7F_7F7F_7F7F
        let isDelete = (delete &- 0x0101_0101_0101_0101) & ~delete & 0x8080_8080_8080_8080
        return below | isDelete == 0
    }

    private static func areFieldValueCharsOneByOne(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Bool {
        var index = start
        while index < bytes.count {
            guard Self.isFieldValueChar(bytes[index]) else { return false }
            index += 1
        }
        return true
    }

    /// Whether `text` is `lowercased` in any case (`lowercased` is ASCII lowercase). On the text's contiguous
    /// UTF-8 (a decoded field always has it) without an iterator per byte, and the length compared first.
    static func equalsIgnoringASCIICase(_ text: String, _ lowercased: StaticString) -> Bool {
        let contiguous = text.utf8.withContiguousStorageIfAvailable { bytes in
            Self.equalsIgnoringASCIICase(UnsafeRawBufferPointer(bytes), lowercased)
        }
        let expected = UnsafeBufferPointer(start: lowercased.utf8Start, count: lowercased.utf8CodeUnitCount)
        return contiguous ?? ProxyHeaders.equalsIgnoringASCIICase(text.utf8, lowercased: expected)
    }

    /// Whether `bytes` are `lowercased` (ASCII lowercase) in any case, the lengths compared first. Always inlined:
    /// as a call from the decoders' name switch it cost about 500 instructions a request (callgrind). Eight bytes
    /// at a time (the last word overlapping the one before it), four at a time below eight: byte by byte it cost
    /// about 40 instructions a field name.
    @inline(__always)
    static func equalsIgnoringASCIICase(_ bytes: UnsafeRawBufferPointer, _ lowercased: StaticString) -> Bool {
        let count = lowercased.utf8CodeUnitCount
        guard bytes.count == count else { return false }
        guard let base = bytes.baseAddress else { return true }
        let expected = UnsafeRawPointer(lowercased.utf8Start)
        func word(_ pointer: UnsafeRawPointer, _ offset: Int) -> UInt64 {
            UInt64(littleEndian: pointer.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        }
        func half(_ pointer: UnsafeRawPointer, _ offset: Int) -> UInt64 {
            UInt64(UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        }
        if count >= 8 {
            var offset = 0
            while offset + 8 <= count {
                guard Self.lowercasedASCII(word(base, offset)) == word(expected, offset) else { return false }
                offset += 8
            }
            return offset == count || Self.lowercasedASCII(word(base, count - 8)) == word(expected, count - 8)
        }
        if count >= 4 {
            return Self.lowercasedASCII(half(base, 0)) == half(expected, 0)
                && Self.lowercasedASCII(half(base, count - 4)) == half(expected, count - 4)
        }
        for index in 0..<count {
            let byte = UInt64(base.load(fromByteOffset: index, as: UInt8.self))
            guard Self.lowercasedASCII(byte) == UInt64(expected.load(fromByteOffset: index, as: UInt8.self)) else {
                return false
            }
        }
        return true
    }

    /// Each ASCII capital of `word` lowered; every other byte (those from 0x80 too) as it is. Worked on the low
    /// seven bits of each byte, so no sum carries into the next: adding 0x3F sets a byte's top bit from `A` (0x41)
    /// up, adding 0x25 from `[` (0x5B) up.
    @inline(__always)
    static func lowercasedASCII(_ word: UInt64) -> UInt64 {
        let sevenBits = word & 0x7F7F_7F7F_7F7F_7F7F
        let fromA = sevenBits &+ 0x3F3F_3F3F_3F3F_3F3F
        let pastZ = sevenBits &+ 0x2525_2525_2525_2525
        let capitals = fromA & ~pastZ & ~word & 0x8080_8080_8080_8080
        return word | capitals >> 2
    }

    /// The minor version of the `HTTP/1.1` or `HTTP/1.0` that `bytes` start with, or nil: the first eight bytes
    /// loaded and compared as one word (`elementsEqual` with the text took about 440 instructions, callgrind).
    static func http1MinorVersion(startOf bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 8, let base = bytes.baseAddress else { return nil }
        switch UInt64(littleEndian: base.loadUnaligned(as: UInt64.self)) {
        case Self.http11: return 1
        case Self.http10: return 0
        default: return nil
        }
    }

    /// Room a head's writer asks for past all it writes: a short text is stored as its string's two words, 16
    /// bytes whatever its length (``SmallASCIIText/inlineWords(_:layoutChecked:)``).
    static let inlineTextSlack = 16

    /// `HTTP/1.1` and `HTTP/1.0` as little-endian words (`H` = 0x48 in the lowest byte).
    static let http11: UInt64 = 0x312E_312F_5054_5448
    static let http10: UInt64 = 0x302E_312F_5054_5448

    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
    }

    /// `start..<end` of `bytes` without the spaces and tabs at either end (RFC 9110 OWS): a field's value, or an
    /// option of a list.
    @inline(__always)
    static func withoutWhitespace(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Range<Int> {
        var first = start
        var last = end
        while first < last, Self.isWhitespace(bytes[first]) { first += 1 }
        while last > first, Self.isWhitespace(bytes[last - 1]) { last -= 1 }
        return first..<last
    }

    /// VCHAR, obs-text, SP and HTAB; never NUL, CR, LF or other controls.
    static func isFieldValueChar(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F)
    }

    /// One `Content-Length` field value; a list (`5, 5`) is allowed only if every element is equal. One pass
    /// over the bytes, allocating nothing (a backend's length is read on every response).
    static func parseContentLength(_ value: UnsafeRawBufferPointer) -> Int? {
        var result: Int?
        var number = 0
        var digits = 0
        var afterDigits = false  // whitespace seen after the element's digits
        func endElement() -> Bool {
            guard digits > 0 else { return false }
            if let seen = result, seen != number { return false }
            result = number
            return true
        }
        for byte in value {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                guard !afterDigits, digits < 18 else { return nil }
                number = number * 10 + Int(byte - UInt8(ascii: "0"))
                digits += 1
            case UInt8(ascii: " "), UInt8(ascii: "\t"):
                afterDigits = digits > 0
            case UInt8(ascii: ","):
                guard endElement() else { return nil }
                number = 0
                digits = 0
                afterDigits = false
            default:
                return nil
            }
        }
        guard endElement() else { return nil }
        return result
    }

    static func parseChunkSize(_ buffer: ByteBuffer, length: Int) throws -> Int {
        let size: Int? = buffer.withUnsafeReadableBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[0..<length])
            var index = 0
            var value = 0
            while index < bytes.count, let digit = hexValue(bytes[index]) {
                if index >= 15 { return nil }  // would overflow 60 bits: refuse
                value = value << 4 | digit
                index += 1
            }
            guard index > 0 else { return nil }
            // Optional chunk extensions: BWS ";" ext, where ext carries no control characters.
            var rest = index
            while rest < bytes.count, isWhitespace(bytes[rest]) { rest += 1 }
            if rest == bytes.count {
                return rest == index ? value : nil
            }
            guard bytes[rest] == UInt8(ascii: ";") else { return nil }
            guard bytes[(rest + 1)...].allSatisfy(isFieldValueChar) else { return nil }
            return value
        }
        guard let size else { throw HTTP1SyntaxError.malformed("invalid chunk size") }
        return size
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }
}

extension HTTPMethod {
    // Case tests for the methods the proxy treats apart. `==` on `HTTPMethod` compares the two `rawValue`
    // strings (the standard library's operator for `RawRepresentable` types wins over the synthesised one),
    // about 100 instructions a compare (callgrind: eight `rawValue`s a proxied GET); a case match is a few.

    @inlinable public var isGET: Bool { if case .GET = self { true } else { false } }
    @inlinable public var isHEAD: Bool { if case .HEAD = self { true } else { false } }
    @inlinable public var isCONNECT: Bool { if case .CONNECT = self { true } else { false } }
    @inlinable public var isTRACE: Bool { if case .TRACE = self { true } else { false } }

    /// `POST`, `PUT` or `PATCH`: the methods whose requests carry a body by convention.
    @inlinable public var conventionallyHasBody: Bool {
        switch self {
        case .POST, .PUT, .PATCH: true
        default: false
        }
    }
}

extension String {
    /// The text of UTF-8 `bytes`, invalid sequences repaired as `String(decoding:as:)` repairs them. Text of up
    /// to 15 ASCII bytes, nearly every field name and most values, is packed straight into the inline form
    /// the standard library itself makes for it (``SmallASCIIText``): about 25 instructions, where the
    /// library's initialisers validate and pack for about 125 (callgrind). Longer text, which needs storage,
    /// and text with non-ASCII bytes is made by `String(decoding:as:)`.
    @inlinable @inline(__always)
    public init(shortUTF8 bytes: UnsafeRawBufferPointer) {
        if let small = SmallASCIIText.string(bytes) {
            self = small
        } else {
            self.init(decoding: bytes, as: UTF8.self)
        }
    }

    /// Whether every UTF-8 byte of the string satisfies `predicate`: over its contiguous UTF-8 when it has one
    /// (a decoded field always has), where the view's iterator costs several times more per byte.
    @inlinable
    public func utf8AllSatisfy(_ predicate: (UInt8) -> Bool) -> Bool {
        self.utf8.withContiguousStorageIfAvailable { $0.allSatisfy(predicate) } ?? self.utf8.allSatisfy(predicate)
    }
}
