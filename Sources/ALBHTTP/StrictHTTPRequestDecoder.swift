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

    public typealias Limits = HTTP1HeadLimits

    private enum State {
        /// Between requests: nothing of the next request seen yet.
        case idle
        case requestLine
        case headers
        /// In `body`.
        case body
        /// HTTP/1 has ended on this connection: bytes are held for the handler that replaces the decoder.
        case handedOff
    }

    private let limits: Limits
    private let acceptsHTTP2Preface: Bool
    /// No request has started on this connection yet (only the first may be an HTTP/2 preface).
    private var firstRequest = true
    private var state: State = .idle
    /// The head being read keeps its fields as lines (``HTTPRequestDecoderOutput/takesFieldLines``), not `fields`.
    /// (Declared among the other one-byte fields: the struct is part of every connection handler.)
    private var readsLines = false
    /// The request line's target is in absolute form (`http://host/path`): passed on in origin form, its
    /// authority as the `Host` (``finishHead(lines:into:)``).
    private var targetIsAbsolute = false
    private var lines = HTTP1LineReader()
    private var body = HTTP1BodyDecoder(.chunkSize)
    private var method = HTTPMethod.GET
    private var uri = ""
    private var version = HTTPVersion.http1_1
    /// The fields of the head being read.
    private var fields: [(String, String)] = []

    /// - Parameter acceptsHTTP2Preface: hand off a connection that opens with the HTTP/2 preface (plain
    ///   HTTP listeners, which serve h2c with prior knowledge); otherwise that line is a malformed request.
    ///   - fieldTexts: the event loop's recent field texts, to take repeated ones from (nil: none).
    public init(limits: Limits = Limits(), acceptsHTTP2Preface: Bool = false, fieldTexts: FieldTextCache? = nil) {
        self.limits = limits
        self.acceptsHTTP2Preface = acceptsHTTP2Preface
        self.lines = HTTP1LineReader(fieldTexts: fieldTexts)
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
        do {
            return try self.step(&buffer, into: output)
        } catch let error as HTTP1SyntaxError {
            switch error.kind {
            case .malformed: throw HTTPEdgeError.badRequest(error.reason)
            case .tooLarge: throw HTTPEdgeError.headersTooLarge(error.reason)
            }
        }
    }

    private mutating func step(_ buffer: inout ByteBuffer, into output: some HTTPRequestDecoderOutput) throws -> Progress {
        switch self.state {
        case .idle:
            switch try HTTP1LineReader.skipEmptyLine(&buffer) {
            case .needMoreData: return .needMoreData
            case .skippedEmptyLine: return .continue
            case .messageStarts: break
            }
            self.lines.startSection(request: true)
            self.readsLines = output.takesFieldLines
            if !self.readsLines {
                self.fields.reserveCapacity(16)  // one allocation for the usual head, as NIO's decoder reserves it
            }
            self.state = .requestLine
            output.requestHeadStarted()
            return .continue

        case .requestLine:
            guard let line = try self.lines.nextSectionLine(buffer, limit: self.limits.maxHeaderBytes) else {
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
            self.lines.consume(&buffer, line)
            self.state = .headers
            return .continue

        case .headers:
            if self.readsLines {
                guard let lines = try self.lines.readFieldLines(&buffer, limits: self.limits) else { return .needMoreData }
                try self.finishHead(lines: lines, into: output)
            } else {
                guard try self.lines.readFields(&buffer, into: &self.fields, limits: self.limits) else { return .needMoreData }
                try self.finishHead(lines: nil, into: output)
            }
            return .continue

        case .body:
            let step = try self.body.decode(&buffer, lines: &self.lines, limits: self.limits, into: output)
            if step == .ended { self.state = .idle }
            return step == .needMoreData ? .needMoreData : .continue

        case .handedOff:
            return .needMoreData
        }
    }

    // MARK: - Request line and fields

    private mutating func parseRequestLine(_ buffer: ByteBuffer, length: Int) throws {
        let parsed: (String, String, Int, TargetForm)? = buffer.withUnsafeReadableBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[0..<length])
            guard let firstSpace = bytes.firstIndex(of: UInt8(ascii: " ")), firstSpace > 0 else { return nil }
            guard HTTP1Syntax.areTokenChars(UnsafeRawBufferPointer(rebasing: bytes[0..<firstSpace])) else { return nil }
            let targetStart = firstSpace + 1
            guard let secondSpace = bytes[targetStart...].firstIndex(of: UInt8(ascii: " ")),
                secondSpace > targetStart
            else { return nil }
            guard bytes[targetStart..<secondSpace].allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else { return nil }
            let version = UnsafeRawBufferPointer(rebasing: bytes[(secondSpace + 1)...])
            guard version.count == 8, let minor = HTTP1Syntax.http1MinorVersion(startOf: version) else { return nil }
            let methodBytes = UnsafeRawBufferPointer(rebasing: bytes[0..<firstSpace])
            let targetBytes = UnsafeRawBufferPointer(rebasing: bytes[targetStart..<secondSpace])
            // Both are ASCII (checked above): up to 15 bytes, the method always and a short target, are packed
            // inline without the standard library's validation (about 100 instructions less each, callgrind).
            let method = String(shortUTF8: methodBytes)
            let target = String(shortUTF8: targetBytes)
            return (method, target, minor, TargetForm.of(targetBytes, method: methodBytes))
        }
        guard let (method, target, minor, form) = parsed else { throw HTTPEdgeError.badRequest("malformed request line") }
        guard form != .invalid else { throw HTTPEdgeError.badRequest("invalid request target") }
        self.method = HTTPMethod(rawValue: method)
        self.uri = target
        self.targetIsAbsolute = form == .absolute
        self.version = HTTPVersion(major: 1, minor: minor)
    }

    /// The four forms of a request target (RFC 9112 section 3.2); anything else is refused, as nginx refuses it:
    /// a target the proxy routes by one path and a backend reads as another (`x`, `../x`) must not pass.
    enum TargetForm: Equatable {
        /// `/path?query`, the usual form.
        case origin
        /// `http://authority/path?query` (or `https`), which a server must accept (section 3.2.2).
        case absolute
        /// `host:port`, for `CONNECT` only (the proxy does not tunnel: answered as any `CONNECT` is).
        case authority
        /// `*`, for `OPTIONS` only.
        case asterisk
        case invalid

        static func of(_ target: UnsafeRawBufferPointer, method: UnsafeRawBufferPointer) -> TargetForm {
            // No form has a fragment (RFC 9112 section 3.2): a backend that cuts the target at `#` reads another
            // path than one that does not (HAProxy refuses it since CVE-2023-45539: `/index.html#.png`).
            if target.contains(UInt8(ascii: "#")) { return .invalid }
            if target.first == UInt8(ascii: "/") { return .origin }
            if target.count == 1, target[0] == UInt8(ascii: "*") {
                return Self.isExactly(method, "OPTIONS") ? .asterisk : .invalid
            }
            if Self.isExactly(method, "CONNECT") { return .authority }
            return AbsoluteTarget(target) != nil ? .absolute : .invalid
        }

        private static func isExactly(_ bytes: UnsafeRawBufferPointer, _ text: StaticString) -> Bool {
            bytes.elementsEqual(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        }
    }

    /// `lines`: the head's fields as lines, when it was read so.
    private mutating func finishHead(lines: HTTP1FieldLines?, into output: some HTTPRequestDecoderOutput) throws {
        var summary = self.lines.summary
        var relayed = lines
        if let lines, summary.framing.foldsLengths || !summary.canLeaveOutHopByHop || summary.present.contains(.upgrade)
            || self.targetIsAbsolute {
            // Read and edited as fields after all (see `HTTPRequestDecoderOutput.takesFieldLines`).
            self.fields = lines.fields(texts: self.lines.fieldTexts)
            relayed = nil
        }
        // RFC 9112 section 6.1: an HTTP/1.0 message with `Transfer-Encoding` has faulty framing (HTTP/1.0 has no
        // chunked coding, and a server before it may have read the body by another rule). nginx answers 400.
        if summary.framing.transferEncodings > 0 && self.version.minor == 0 {
            throw HTTPEdgeError.badRequest("Transfer-Encoding in an HTTP/1.0 request")
        }
        let framing = try HTTP1BodyFraming.of(&self.fields, summary: &summary)
        let hosts = summary.hosts
        if hosts > 1 || (hosts == 0 && self.version.minor >= 1) {
            throw HTTPEdgeError.badRequest("missing or duplicate Host")
        }
        if self.targetIsAbsolute {
            self.targetIsAbsolute = false
            self.passOnInOriginForm()
        }
        var next: State = .idle
        if let body = framing.body(unframed: nil) {
            self.body = body
            next = .body
        }
        if let lines = relayed {
            self.firstRequest = false
            self.state = next
            output.received(head: HTTPRequestHead(version: self.version, method: self.method, uri: self.uri, headers: HTTPHeaders()),
                            summary: summary, fieldLines: lines)
            if case .idle = next { output.received(.end(nil)) }
            return
        }
        let headers = HTTPHeaders(self.fields)
        self.fields = []
        let head = HTTPRequestHead(version: self.version, method: self.method, uri: self.uri, headers: headers)
        if summary.present.contains(.upgrade), WebSocketHandshake.isRequested(head) {
            if let reason = WebSocketHandshake.refusal(head) {
                throw HTTPEdgeError.badRequest(reason)
            }
            next = .handedOff  // bodyless: its end follows at once
        }
        self.firstRequest = false
        self.state = next
        output.received(.head(head))
        switch next {
        case .idle, .handedOff: output.received(.end(nil))
        default: break
        }
    }
}

extension StrictHTTPRequestDecoder {
    /// An absolute-form target's request as the proxy passes it on: RFC 9112 section 3.2.2 has a server take the
    /// target's authority and ignore `Host`, so the target's authority becomes the only `Host` field (first, as
    /// an HTTP/2 request's `:authority` does) and the target its path and query (`/` when it has none; `*` for an
    /// `OPTIONS`, section 3.2.4). Routing, the access log and the backend all see that one authority.
    private mutating func passOnInOriginForm() {
        var uri = self.uri
        let parts: (authority: String, path: String)? = uri.withUTF8 { storage in
            let bytes = UnsafeRawBufferPointer(storage)
            guard let target = AbsoluteTarget(bytes) else { return nil }
            return (String(decoding: UnsafeRawBufferPointer(rebasing: bytes[target.authority]), as: UTF8.self),
                    String(decoding: UnsafeRawBufferPointer(rebasing: bytes[target.pathAndQuery]), as: UTF8.self))
        }
        guard let (authority, pathAndQuery) = parts else { return }  // checked as the request line was read
        var path = pathAndQuery
        if path.isEmpty {
            path = self.method == .OPTIONS ? "*" : "/"
        } else if path.utf8.first == UInt8(ascii: "?") {
            path = "/" + path
        }
        self.uri = path
        self.fields.removeAll { HTTP1Syntax.equalsIgnoringASCIICase($0.0, "host") }
        self.fields.insert(("Host", authority), at: 0)
    }
}

/// An absolute-form request target's parts: `http` or `https` (any case), `://`, an authority that is not empty
/// and of ``HostSyntax``'s form (so without userinfo: RFC 9110 section 4.2.4 makes its presence an error), then the
/// path and query, if any.
struct AbsoluteTarget {
    /// Byte offsets into the target.
    let authority: Range<Int>
    let pathAndQuery: Range<Int>

    init?(_ target: UnsafeRawBufferPointer) {
        let schemeEnd: Int
        func starts(with scheme: StaticString) -> Bool {
            let count = scheme.utf8CodeUnitCount
            return target.count > count
                && HTTP1Syntax.equalsIgnoringASCIICase(UnsafeRawBufferPointer(rebasing: target[0..<count]), scheme)
        }
        if starts(with: "http://") {
            schemeEnd = 7
        } else if starts(with: "https://") {
            schemeEnd = 8
        } else {
            return nil
        }
        var end = schemeEnd
        while end < target.count, target[end] != UInt8(ascii: "/"), target[end] != UInt8(ascii: "?"),
              target[end] != UInt8(ascii: "#") {
            end += 1
        }
        guard end > schemeEnd, HostSyntax.isValid(UnsafeRawBufferPointer(rebasing: target[schemeEnd..<end])) else {
            return nil
        }
        self.authority = schemeEnd..<end
        self.pathAndQuery = end..<target.count
    }
}

@available(*, unavailable)
extension StrictHTTPRequestDecoder: Sendable {}

/// Where a ``StrictHTTPRequestDecoder`` delivers what it decodes, as it decodes it.
public protocol HTTPRequestDecoderOutput: HTTP1PartOutput where Head == HTTPRequestHead {
    /// The first byte of a new request arrived: its head is in progress (the header timeout starts).
    func requestHeadStarted()
    /// The connection opened with the HTTP/2 preface (only with `acceptsHTTP2Preface`); the decoder has
    /// handed off, with the preface unread.
    func receivedHTTP2Preface()
    func received(_ part: HTTPServerRequestPart)
    /// Whether the next head's fields are to be kept as the lines they arrived in (``HTTP1FieldLines``), for an
    /// output that passes them on unchanged; asked as each head starts. A head with an `Upgrade`, equal
    /// `Content-Length`s to fold into one or hop-by-hop fields that cannot be told by position comes with its
    /// fields as strings all the same.
    var takesFieldLines: Bool { get }
    /// A head whose fields came as lines (``takesFieldLines``): `head` has none, `fieldLines` all of them as sent,
    /// the hop-by-hop and forwarding ones included (``HTTP1HeadSummary`` says where they are). By default the
    /// fields are put back in the head.
    func received(head: HTTPRequestHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines)
}

extension HTTPRequestDecoderOutput {
    public var takesFieldLines: Bool { false }

    public func received(head: HTTPRequestHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
        self.received(.head(head.withFields(of: fieldLines)))
    }
}
