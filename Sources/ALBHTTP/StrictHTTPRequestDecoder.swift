import NIOCore
import NIOHTTP1

/// A strict HTTP/1.x request decoder that replaces NIO's `HTTPRequestDecoder` at the edge.
///
/// NIO's llhttp-based decoder allows up to 80 KiB of head and any number of fields, and reports
/// every refusal as one generic parser error. This decoder enforces the listener's own limits and
/// says *which* rule failed, so the edge can answer 431 or 400 precisely. It refuses everything
/// that lets two parsers disagree about where a request ends:
/// - both `Content-Length` and `Transfer-Encoding`; differing duplicate `Content-Length`s (equal ones are
///   folded into one header, never passed on as sent);
///   a transfer coding other than exactly `chunked`;
/// - an invalid chunk size or chunk extension, chunk data not followed by CRLF;
/// - obsolete line folding, a bare CR or a bare LF, whitespace before the colon;
/// - CTL characters (NUL included) in the request line, field names or values;
/// - a missing or duplicate `Host` on HTTP/1.1.
///
/// It works line by line and remembers how far it has scanned, so byte-by-byte input costs O(n).
/// Bodies are streamed as they arrive (never buffered whole). It does not decode transfer codings other
/// than `chunked`.
///
/// It is not a channel handler: ``HTTP1ConnectionHandler`` runs it on the connection's bytes and it delivers
/// what it decodes to an ``HTTPRequestDecoderOutput``, a direct call where a handler of its own would cost every
/// part a pipeline hop and a `NIOAny` cast.
///
/// Two things end HTTP/1 on a connection, and then the decoder hands off (``hasHandedOff``): it consumes
/// nothing more, and the handler passes the bytes it holds, unparsed, to what replaced it.
/// - A well-formed WebSocket upgrade request (``WebSocketHandshake``; a malformed one is a 400): after
///   its end, whatever the client sends belongs to the protocol the backend may switch to. Nothing
///   behind it is parsed as HTTP, whatever the backend answers (a request smuggled behind a refused
///   upgrade is never read).
/// - With `acceptsHTTP2Preface`, a connection that opens with the HTTP/2 preface (`PRI * HTTP/2.0`, h2c
///   with prior knowledge): the output hears of it and the preface itself stays unread.
public struct StrictHTTPRequestDecoder {
    /// What a decode step asks for next.
    public enum Progress: Equatable {
        /// Decode again: the buffer may hold more.
        case `continue`
        /// Nothing more can be decoded from these bytes.
        case needMoreData
    }

    public struct Limits: Sendable, Equatable {
        /// Request line plus header section, in bytes, CRLFs included (the final empty line too).
        public var maxHeaderBytes: Int
        /// Header fields per request (trailer fields are counted separately with the same limit).
        public var maxHeaderCount: Int
        /// A chunk-size line (size plus extensions) may not be longer than this.
        public var maxChunkLineBytes: Int

        public init(maxHeaderBytes: Int = 65536, maxHeaderCount: Int = 100, maxChunkLineBytes: Int = 4096) {
            self.maxHeaderBytes = maxHeaderBytes
            self.maxHeaderCount = maxHeaderCount
            self.maxChunkLineBytes = maxChunkLineBytes
        }
    }

    private enum State {
        /// Between requests: nothing of the next request seen yet.
        case idle
        case requestLine
        case headers
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        /// HTTP/1 has ended on this connection: bytes are held for the handler that replaces the decoder.
        case handedOff
    }

    private struct Line {
        /// Bytes before the CRLF.
        var content: Int
        /// Bytes including the CRLF.
        var total: Int
    }

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")

    private let limits: Limits
    private let acceptsHTTP2Preface: Bool
    /// No request has started on this connection yet (only the first may be an HTTP/2 preface).
    private var firstRequest = true
    private var state: State = .idle
    /// Bytes of the current head (or trailer section) consumed so far.
    private var headBytes = 0
    /// How far the current, unfinished line has been scanned for LF.
    private var scanned = 0
    private var fieldCount = 0
    private var method = HTTPMethod.GET
    private var uri = ""
    private var version = HTTPVersion.http1_1
    private var headers = HTTPHeaders()
    private var trailers = HTTPHeaders()

    /// - Parameter acceptsHTTP2Preface: hand off a connection that opens with the HTTP/2 preface (plain
    ///   HTTP listeners, which serve h2c with prior knowledge); otherwise that line is a malformed request.
    public init(limits: Limits = Limits(), acceptsHTTP2Preface: Bool = false) {
        self.limits = limits
        self.acceptsHTTP2Preface = acceptsHTTP2Preface
    }

    /// `PRI * HTTP/2.0`: the request line the HTTP/2 connection preface starts with (RFC 9113 section 3.4).
    private static let http2PrefaceLine = Array("PRI * HTTP/2.0".utf8)

    /// HTTP/1 has ended on this connection (a WebSocket upgrade, an HTTP/2 preface): nothing more is decoded.
    public var hasHandedOff: Bool {
        if case .handedOff = self.state { return true }
        return false
    }

    /// One step: consumes what it can of `buffer` and tells `output` what it found. Throws an
    /// ``HTTPEdgeError`` when the input is refused; the decoder is then of no further use.
    public mutating func decode(_ buffer: inout ByteBuffer, into output: some HTTPRequestDecoderOutput) throws -> Progress {
        switch self.state {
        case .idle:
            guard let first = buffer.readableBytesView.first else { return .needMoreData }
            if first == Self.cr {
                // RFC 9112 §2.2: ignore empty lines before a request line.
                guard buffer.readableBytes >= 2 else { return .needMoreData }
                guard buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) == Self.lf else {
                    throw HTTPEdgeError.badRequest("bare CR")
                }
                buffer.moveReaderIndex(forwardBy: 2)
                return .continue
            }
            self.headBytes = 0
            self.fieldCount = 0
            self.scanned = 0
            self.headers = HTTPHeaders()
            self.state = .requestLine
            output.requestHeadStarted()
            return .continue

        case .requestLine:
            guard let line = try self.nextLine(buffer, used: self.headBytes, limit: self.limits.maxHeaderBytes) else {
                return .needMoreData
            }
            if self.firstRequest && self.acceptsHTTP2Preface && line.content == Self.http2PrefaceLine.count
                && buffer.readableBytesView.prefix(line.content).elementsEqual(Self.http2PrefaceLine)
            {
                self.state = .handedOff
                output.receivedHTTP2Preface()
                return .needMoreData
            }
            try self.parseRequestLine(buffer, length: line.content)
            self.consume(&buffer, line)
            self.state = .headers
            return .continue

        case .headers:
            guard let line = try self.nextLine(buffer, used: self.headBytes, limit: self.limits.maxHeaderBytes) else {
                return .needMoreData
            }
            if line.content == 0 {
                self.consume(&buffer, line)
                try self.finishHead(into: output)
                return .continue
            }
            let (name, value) = try self.parseField(buffer, length: line.content)
            self.headers.add(name: name, value: value)
            self.consume(&buffer, line)
            return .continue

        case .fixedBody(let remaining):
            guard buffer.readableBytes > 0, let slice = buffer.readSlice(length: min(remaining, buffer.readableBytes))
            else { return .needMoreData }
            let left = remaining - slice.readableBytes
            self.state = left == 0 ? .idle : .fixedBody(remaining: left)
            output.received(.body(slice))
            if left == 0 {
                output.received(.end(nil))
            }
            return .continue

        case .chunkSize:
            guard let line = try self.nextLine(buffer, used: 0, limit: self.limits.maxChunkLineBytes, tooLarge: false)
            else { return .needMoreData }
            let size = try Self.parseChunkSize(buffer, length: line.content)
            buffer.moveReaderIndex(forwardBy: line.total)
            if size == 0 {
                self.headBytes = 0
                self.fieldCount = 0
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
                if let first = buffer.readableBytesView.first, first != Self.cr {
                    throw HTTPEdgeError.badRequest("chunk data not followed by CRLF")
                }
                return .needMoreData
            }
            guard buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) == 0x0D0A else {
                throw HTTPEdgeError.badRequest("chunk data not followed by CRLF")
            }
            buffer.moveReaderIndex(forwardBy: 2)
            self.state = .chunkSize
            return .continue

        case .trailers:
            guard let line = try self.nextLine(buffer, used: self.headBytes, limit: self.limits.maxHeaderBytes) else {
                return .needMoreData
            }
            if line.content == 0 {
                self.consume(&buffer, line)
                let trailers = self.trailers
                self.trailers = HTTPHeaders()
                self.state = .idle
                output.received(.end(trailers.isEmpty ? nil : trailers))
                return .continue
            }
            let (name, value) = try self.parseField(buffer, length: line.content)
            self.trailers.add(name: name, value: value)
            self.consume(&buffer, line)
            return .continue

        case .handedOff:
            return .needMoreData
        }
    }

    // MARK: - Lines

    private mutating func consume(_ buffer: inout ByteBuffer, _ line: Line) {
        buffer.moveReaderIndex(forwardBy: line.total)
        self.headBytes += line.total
    }

    /// Finds the next CRLF-terminated line without consuming it. Refuses a bare LF, a CR inside the
    /// line, and lines that would take the section past `limit` (checked before the line is complete,
    /// so an endless line is refused as soon as it crosses the limit).
    private mutating func nextLine(
        _ buffer: ByteBuffer,
        used: Int,
        limit: Int,
        tooLarge: Bool = true
    ) throws -> Line? {
        let start = self.scanned
        let found: Int? = buffer.withUnsafeReadableBytes { bytes in
            var index = start
            while index < bytes.count {
                if bytes[index] == Self.lf { return index }
                index += 1
            }
            return nil
        }
        guard let lf = found else {
            self.scanned = buffer.readableBytes
            if used + buffer.readableBytes > limit {
                throw tooLarge
                    ? HTTPEdgeError.headersTooLarge("more than \(limit) bytes")
                    : HTTPEdgeError.badRequest("chunk size line too long")
            }
            return nil
        }
        self.scanned = 0
        let total = lf + 1
        if used + total > limit {
            throw tooLarge
                ? HTTPEdgeError.headersTooLarge("more than \(limit) bytes")
                : HTTPEdgeError.badRequest("chunk size line too long")
        }
        let hasBareCR: Bool? = buffer.withUnsafeReadableBytes { bytes in
            guard lf >= 1, bytes[lf - 1] == Self.cr else { return nil }
            return bytes[0..<(lf - 1)].contains(Self.cr)
        }
        guard let bareCR = hasBareCR else { throw HTTPEdgeError.badRequest("bare LF") }
        if bareCR { throw HTTPEdgeError.badRequest("bare CR") }
        return Line(content: lf - 1, total: total)
    }

    // MARK: - Request line and fields

    private mutating func parseRequestLine(_ buffer: ByteBuffer, length: Int) throws {
        let parsed: (String, String, Int)? = buffer.withUnsafeReadableBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[0..<length])
            guard let firstSpace = bytes.firstIndex(of: UInt8(ascii: " ")), firstSpace > 0 else { return nil }
            guard bytes[0..<firstSpace].allSatisfy(Self.isTokenChar) else { return nil }
            let targetStart = firstSpace + 1
            guard let secondSpace = bytes[targetStart...].firstIndex(of: UInt8(ascii: " ")),
                secondSpace > targetStart
            else { return nil }
            guard bytes[targetStart..<secondSpace].allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else { return nil }
            let versionBytes = bytes[(secondSpace + 1)...]
            let minor: Int
            if versionBytes.elementsEqual("HTTP/1.1".utf8) {
                minor = 1
            } else if versionBytes.elementsEqual("HTTP/1.0".utf8) {
                minor = 0
            } else {
                return nil
            }
            let method = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<firstSpace]), as: UTF8.self)
            let target = String(
                decoding: UnsafeRawBufferPointer(rebasing: bytes[targetStart..<secondSpace]),
                as: UTF8.self
            )
            return (method, target, minor)
        }
        guard let (method, target, minor) = parsed else { throw HTTPEdgeError.badRequest("malformed request line") }
        self.method = HTTPMethod(rawValue: method)
        self.uri = target
        self.version = HTTPVersion(major: 1, minor: minor)
    }

    private mutating func parseField(_ buffer: ByteBuffer, length: Int) throws -> (String, String) {
        self.fieldCount += 1
        if self.fieldCount > self.limits.maxHeaderCount {
            throw HTTPEdgeError.headersTooLarge("more than \(self.limits.maxHeaderCount) fields")
        }
        let parsed: Result<(String, String), HTTPEdgeError> = buffer.withUnsafeReadableBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[0..<length])
            if bytes[0] == UInt8(ascii: " ") || bytes[0] == UInt8(ascii: "\t") {
                return .failure(.badRequest("obsolete line folding"))
            }
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")), colon > 0,
                bytes[0..<colon].allSatisfy(Self.isTokenChar)
            else { return .failure(.badRequest("malformed header field name")) }
            var valueStart = colon + 1
            var valueEnd = bytes.count
            while valueStart < valueEnd, Self.isWhitespace(bytes[valueStart]) { valueStart += 1 }
            while valueEnd > valueStart, Self.isWhitespace(bytes[valueEnd - 1]) { valueEnd -= 1 }
            guard bytes[valueStart..<valueEnd].allSatisfy(Self.isFieldValueChar) else {
                return .failure(.badRequest("invalid character in header field value"))
            }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<colon]), as: UTF8.self)
            let value = String(
                decoding: UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd]),
                as: UTF8.self
            )
            return .success((name, value))
        }
        return try parsed.get()
    }

    private mutating func finishHead(into output: some HTTPRequestDecoderOutput) throws {
        let transferEncoding = self.headers[canonicalForm: "transfer-encoding"]
        let contentLengths = self.headers[canonicalForm: "content-length"]
        if !transferEncoding.isEmpty && !contentLengths.isEmpty {
            throw HTTPEdgeError.badRequest("both Content-Length and Transfer-Encoding")
        }
        var hosts = 0  // counted in place: `headers["host"]` would allocate an array per request
        for (name, _) in self.headers where name.utf8.count == 4 && ProxyHeaders.equalsIgnoringASCIICase(name.utf8, lowercased: "host".utf8) {
            hosts += 1
        }
        if hosts > 1 || (hosts == 0 && self.version.minor >= 1) {
            throw HTTPEdgeError.badRequest("missing or duplicate Host")
        }
        var next: State = .idle
        if !transferEncoding.isEmpty {
            guard transferEncoding.count == 1, transferEncoding[0].lowercased() == "chunked" else {
                throw HTTPEdgeError.badRequest("unsupported Transfer-Encoding")
            }
            next = .chunkSize
        } else if !contentLengths.isEmpty {
            var length: Int?
            for value in contentLengths {
                guard let parsed = Self.parseContentLength(value) else {
                    throw HTTPEdgeError.badRequest("invalid Content-Length")
                }
                if let seen = length, seen != parsed {
                    throw HTTPEdgeError.badRequest("differing Content-Length values")
                }
                length = parsed
            }
            if contentLengths.count > 1 || contentLengths[0].utf8.contains(UInt8(ascii: ",")) {
                // Equal repeated lengths are accepted but never forwarded as sent (RFC 9110 section 8.6):
                // the backend gets one `Content-Length`, as HAProxy sends it.
                self.headers.replaceOrAdd(name: "content-length", value: String(length ?? 0))
            }
            if let length, length > 0 {
                next = .fixedBody(remaining: length)
            }
        }
        let head = HTTPRequestHead(version: self.version, method: self.method, uri: self.uri, headers: self.headers)
        if WebSocketHandshake.isRequested(head) {
            if let reason = WebSocketHandshake.refusal(head) {
                throw HTTPEdgeError.badRequest(reason)
            }
            next = .handedOff  // bodyless: its end follows at once
        }
        self.firstRequest = false
        self.headers = HTTPHeaders()
        self.state = next
        output.received(.head(head))
        switch next {
        case .idle, .handedOff: output.received(.end(nil))
        default: break
        }
    }

    // MARK: - Character classes and numbers

    static func isTokenChar(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
    }

    /// VCHAR, obs-text, SP and HTAB; never NUL, CR, LF or other controls.
    static func isFieldValueChar(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F)
    }

    /// One `Content-Length` field value; a list (`5, 5`) is allowed only if every element is equal.
    static func parseContentLength(_ value: some StringProtocol) -> Int? {
        var result: Int?
        for element in value.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = element.utf8.drop(while: isWhitespace).reversed().drop(while: isWhitespace).reversed()
            guard !trimmed.isEmpty, trimmed.count <= 18,
                trimmed.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
            else { return nil }
            let number = trimmed.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            if let seen = result, seen != number { return nil }
            result = number
        }
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
        guard let size else { throw HTTPEdgeError.badRequest("invalid chunk size") }
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

@available(*, unavailable)
extension StrictHTTPRequestDecoder: Sendable {}

/// Where a ``StrictHTTPRequestDecoder`` delivers what it decodes, as it decodes it.
public protocol HTTPRequestDecoderOutput {
    /// The first byte of a new request arrived: its head is in progress (the header timeout starts).
    func requestHeadStarted()
    /// The connection opened with the HTTP/2 preface (only with `acceptsHTTP2Preface`); the decoder has
    /// handed off, with the preface unread.
    func receivedHTTP2Preface()
    func received(_ part: HTTPServerRequestPart)
}
