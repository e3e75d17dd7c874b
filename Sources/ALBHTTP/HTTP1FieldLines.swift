import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A response head's field lines as the backend sent them (`name: value` and its CRLF each, checked by the
/// strict decoder), for a head that goes to an HTTP/1 client with its fields unchanged: they are copied to the
/// client as bytes instead of being made into `HTTPHeaders` strings and encoded again.
///
/// Why: behind nginx, making a response's fields into strings, encoding them again and destroying their array
/// (through the runtime's generic tuple destroy) cost about 2,900 of a proxied request's 40,000 instructions
/// (callgrind, docs/benchmarks.md). The lines are relayed only where nothing reads or edits the backend's fields: an
/// HTTP/1 client attached by direct call (no compression stage), no `Alt-Svc` to set, no WebSocket upgrade
/// (``StrictHTTPResponseDecoder/expectResponse(to:relayingFieldLines:)``). The proxy's own fields
/// (`transfer-encoding`, `connection`, a sticky session's `set-cookie`) follow them, as they follow the
/// backend's fields in a parsed head. Unlike a parsed head, a value keeps its bytes as sent: the spaces around
/// it, and bytes that are not valid UTF-8 (not replaced by U+FFFD), as nginx and HAProxy pass those on.
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
        // Lines are looked for up to the last one left out; those after it move up in one piece.
        let last = 63 - positions.leadingZeroBitCount
        let kept = self.bytes.withUnsafeMutableReadableBytes { memory -> Int in
            guard let base = memory.baseAddress else { return 0 }
            var read = 0
            var written = 0
            for line in 0...last {
                // Every line ends in CRLF and holds no LF before it (the decoder checked them).
                guard let lf = memchr(base + read, Int32(UInt8(ascii: "\n")), memory.count - read) else { break }
                let length = base.distance(to: UnsafeMutableRawPointer(lf)) - read + 1
                if positions & (1 << UInt64(line)) == 0 {
                    if written != read { memmove(base + written, base + read, length) }
                    written += length
                }
                read += length
            }
            let rest = memory.count - read
            if rest > 0 && written != read { memmove(base + written, base + read, rest) }
            return written + rest
        }
        self.bytes.moveWriterIndex(to: self.bytes.readerIndex + kept)
    }

    /// The fields, as a decoder makes them from the same lines (names as sent, values without the spaces and
    /// tabs around them).
    public func fields(texts: FieldTextCache? = nil) -> [(String, String)] {
        var fields: [(String, String)] = []
        self.bytes.withUnsafeReadableBytes { memory in
            var start = 0
            for index in memory.indices where memory[index] == UInt8(ascii: "\n") {
                // `name:` OWS value OWS CR LF, checked when the line was read.
                let line = UnsafeRawBufferPointer(rebasing: memory[start..<max(start, index - 1)])
                start = index + 1
                guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
                let name = UnsafeRawBufferPointer(rebasing: line[..<colon])
                let value = UnsafeRawBufferPointer(rebasing: line[HTTP1Syntax.withoutWhitespace(line, colon + 1, line.count)])
                fields.append(texts?.texts(name: name, value: value)
                    ?? (String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
            }
        }
        return fields
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
