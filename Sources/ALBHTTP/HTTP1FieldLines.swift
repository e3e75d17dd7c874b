import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A head's field lines as its sender wrote them (`name: value` and its CRLF each, checked by a strict decoder), for
/// a head passed on with its fields unchanged: they are copied as bytes instead of being made into `HTTPHeaders`
/// strings and encoded again.
///
/// Why: behind nginx, making a response's fields into strings, encoding them again and destroying their array
/// (through the runtime's generic tuple destroy) cost about 2,900 of a proxied request's 40,000 instructions
/// (callgrind, docs/benchmarks.md), and a request's about 1,500 of 37,000. Only where nothing reads or edits the
/// fields: a response to an HTTP/1 client attached by direct call (no compression stage), no `Alt-Svc` to set, no
/// WebSocket upgrade (``StrictHTTPResponseDecoder/expectResponse(to:relayingFieldLines:)``); a request to an HTTP/1
/// backend from a listener that reads none of its fields (``HTTPRequestDecoderOutput/takesFieldLines``,
/// ``ProxyHeaders/linesLeftOut(of:summary:)``). The proxy's own fields follow the lines, as they follow the
/// sender's fields in a parsed head. Unlike a parsed head, a value keeps its bytes as sent: the spaces around it,
/// and bytes that are not valid UTF-8 (not replaced by U+FFFD), as nginx and HAProxy pass those on. A response's
/// lines are copied into memory its decoder uses again; a request's are a slice of the connection's input.
public struct HTTP1FieldLines {
    /// The lines, each with its CRLF; no empty line after the last. Nothing else is kept: a connection handler
    /// holds a head's lines until its body comes, and every byte of it counts against an idle connection.
    public private(set) var bytes: ByteBuffer

    init(bytes: ByteBuffer) {
        self.bytes = bytes
    }

    /// Appends whole lines, CRLFs included.
    mutating func append(_ lines: UnsafeRawBufferPointer) {
        guard lines.count > 0 else { return }
        self.bytes.writeBytes(lines)
    }

    /// Leaves out the lines at the positions set in `positions` (bit i: line i), moving the later lines up.
    mutating func leaveOut(positions: UInt64) {
        guard positions != 0 else { return }
        let kept = self.bytes.withUnsafeMutableReadableBytes { memory -> Int in
            guard let base = memory.baseAddress else { return 0 }
            return Self.copy(from: UnsafeRawBufferPointer(memory), to: base, leavingOut: positions)
        }
        self.bytes.moveWriterIndex(to: self.bytes.readerIndex + kept)
    }

    /// Copies the lines to `target` except those at the positions set in `positions` (bit i: line i), as
    /// ``leaveOut(positions:)`` leaves them; returns how many bytes it wrote.
    func copy(to target: UnsafeMutableRawPointer, leavingOut positions: UInt64) -> Int {
        self.bytes.withUnsafeReadableBytes { Self.copy(from: $0, to: target, leavingOut: positions) }
    }

    /// The lines of `source` to `target` (which may be `source` itself: the lines move up), leaving out those
    /// at the positions set in `positions`.
    private static func copy(from source: UnsafeRawBufferPointer, to target: UnsafeMutableRawPointer,
                             leavingOut positions: UInt64) -> Int {
        guard let base = source.baseAddress else { return 0 }
        var read = 0
        var written = 0
        if positions != 0 {
            // Lines are looked for up to the last one left out; those after it move in one piece.
            let last = 63 - positions.leadingZeroBitCount
            for line in 0...last {
                // Every line ends in CRLF and holds no LF before it (the decoder checked them).
                guard let lf = memchr(base + read, Int32(UInt8(ascii: "\n")), source.count - read) else { break }
                let length = base.distance(to: UnsafeRawPointer(lf)) - read + 1
                if positions & (1 << UInt64(line)) == 0 {
                    if target + written != UnsafeMutableRawPointer(mutating: base + read) {
                        memmove(target + written, base + read, length)
                    }
                    written += length
                }
                read += length
            }
        }
        let rest = source.count - read
        if rest > 0 && target + written != UnsafeMutableRawPointer(mutating: base + read) {
            memmove(target + written, base + read, rest)
        }
        return written + rest
    }

    /// Each line, without its CRLF, to `body` until it returns false.
    private func forEachLine(_ body: (UnsafeRawBufferPointer) -> Bool) {
        self.bytes.withUnsafeReadableBytes { memory in
            var start = 0
            for index in memory.indices where memory[index] == UInt8(ascii: "\n") {
                // `name:` OWS value OWS CR LF, checked when the line was read.
                let line = UnsafeRawBufferPointer(rebasing: memory[start..<max(start, index - 1)])
                start = index + 1
                if !body(line) { return }
            }
        }
    }

    /// The fields, as a decoder makes them from the same lines (names as sent, values without the spaces and
    /// tabs around them).
    public func fields(texts: FieldTextCache? = nil) -> [(String, String)] {
        var fields: [(String, String)] = []
        self.forEachLine { line in
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return true }
            let name = UnsafeRawBufferPointer(rebasing: line[..<colon])
            let value = UnsafeRawBufferPointer(rebasing: line[HTTP1Syntax.withoutWhitespace(line, colon + 1, line.count)])
            fields.append(texts?.texts(name: name, value: value)
                ?? (String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
            return true
        }
        return fields
    }

    /// The fields with their names in lowercase (as an HTTP/2 header block has them, RFC 9113 section 8.2.1),
    /// appended to `pairs`: for a response relayed to an HTTP/2 client, without an `HTTPHeaders` in between.
    /// Values as ``fields(texts:)`` makes them. Returns false as soon as a field named `stop` turns up (given
    /// in lowercase, at most 15 bytes), with `pairs` holding the fields before it.
    ///
    /// A short name (nearly all) is lowered in the two words of its inline form; a longer one in a copy on the
    /// stack, its text from `texts`. Each line's end and colon are found by `memchr`, not a loop over its bytes.
    public func appendLowercasedFields(to pairs: inout [(String, String)], texts: FieldTextCache?,
                                       stoppingAt stop: StaticString) -> Bool {
        let inline = SmallASCIIText.layoutMatches
        let stopWords = inline ? stop.withUTF8Buffer { SmallASCIIText.words(UnsafeRawBufferPointer($0)) } : nil
        return self.bytes.withUnsafeReadableBytes { memory -> Bool in
            guard let base = memory.baseAddress else { return true }
            var start = 0
            while start < memory.count,
                  let lf = memchr(base + start, Int32(UInt8(ascii: "\n")), memory.count - start) {
                let end = base.distance(to: UnsafeRawPointer(lf))
                // `name:` OWS value OWS CR LF, checked when the line was read.
                let line = UnsafeRawBufferPointer(rebasing: memory[start..<max(start, end - 1)])
                start = end + 1
                guard let lineBase = line.baseAddress,
                      let colonAt = memchr(lineBase, Int32(UInt8(ascii: ":")), line.count) else { continue }
                let colon = lineBase.distance(to: UnsafeRawPointer(colonAt))
                let name = UnsafeRawBufferPointer(rebasing: line[..<colon])
                let value = UnsafeRawBufferPointer(rebasing: line[HTTP1Syntax.withoutWhitespace(line, colon + 1, line.count)])
                let lowered: String
                if inline, name.count <= SmallASCIIText.capacity, let words = SmallASCIIText.words(name) {
                    let words = SmallASCIIText.lowercased(words: words)
                    if let stopWords, words == stopWords { return false }
                    lowered = SmallASCIIText.string(words: words)
                } else {
                    lowered = Self.lowercased(name, texts: texts)
                    if !inline, lowered.utf8.elementsEqual(UnsafeRawBufferPointer(start: stop.utf8Start,
                                                                                  count: stop.utf8CodeUnitCount)) {
                        return false
                    }
                }
                pairs.append((lowered, texts?.text(value) ?? String(decoding: value, as: UTF8.self)))
            }
            return true
        }
    }

    /// A name of more than 15 bytes in lowercase, lowered in a copy on the stack.
    private static func lowercased(_ name: UnsafeRawBufferPointer, texts: FieldTextCache?) -> String {
        withUnsafeTemporaryAllocation(byteCount: name.count, alignment: 1) { copy in
            for index in 0..<name.count {
                let byte = name[index]
                copy[index] = byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
            }
            let lowered = UnsafeRawBufferPointer(copy)
            return texts?.text(lowered) ?? String(decoding: lowered, as: UTF8.self)
        }
    }

    /// The value of the first field named `name` (given in lowercase), in any case, without the spaces and tabs
    /// around it: ``HTTPHeaders/first(lowercased:)`` on the lines, for the one field a caller reads (`Host`).
    public func first(lowercased name: StaticString) -> String? {
        let length = name.utf8CodeUnitCount
        var value: String?
        self.forEachLine { line in
            guard line.count > length, line[length] == UInt8(ascii: ":"),
                HTTP1Syntax.equalsIgnoringASCIICase(UnsafeRawBufferPointer(rebasing: line[..<length]), name)
            else { return true }
            value = String(decoding: line[HTTP1Syntax.withoutWhitespace(line, length + 1, line.count)], as: UTF8.self)
            return false
        }
        return value
    }

    /// The fields but those at the positions set in `leftOut` (bit i: line i), as a head's, `own` after them.
    public func headers(leavingOut leftOut: UInt64, followedBy own: HTTPHeaders) -> HTTPHeaders {
        var lines = self
        lines.leaveOut(positions: leftOut)
        return lines.headers(followedBy: own)
    }

    /// The fields as a head's: for a consumer that reads or edits them after all.
    public var headers: HTTPHeaders { self.headers(followedBy: HTTPHeaders()) }

    /// The fields as a head's, `own` after them (the proxy's, as a relayed head has them).
    public func headers(followedBy own: HTTPHeaders) -> HTTPHeaders {
        var fields = self.fields()
        fields.append(contentsOf: own.lazy.map { ($0.name, $0.value) })
        return HTTPHeaders(fields)
    }
}

@available(*, unavailable)
extension HTTP1FieldLines: Sendable {}
