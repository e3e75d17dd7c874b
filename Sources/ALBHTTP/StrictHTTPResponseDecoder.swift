import NIOCore
import NIOHTTP1

/// A strict HTTP/1.x response decoder for backend connections, in place of NIO's llhttp-based
/// `HTTPResponseDecoder`.
///
/// A proxy must not let a backend split or smuggle responses: what this decoder takes for one response is
/// what any other parser would take for it. It refuses, as llhttp does and more:
/// - both `Content-Length` and `Transfer-Encoding`; differing duplicate `Content-Length`s (equal ones are
///   folded into one header); a length that is not digits; a transfer coding other than exactly `chunked`;
/// - an invalid chunk size or chunk extension, chunk data not followed by CRLF;
/// - obsolete line folding, a bare CR or a bare LF, whitespace before the colon;
/// - CTL characters (NUL included) in the status line, field names or values;
/// - `Transfer-Encoding` in an `HTTP/1.0` response (RFC 9112 section 6.1: faulty framing);
/// - a status line other than `HTTP/1.1` or `HTTP/1.0`, a three-digit status of at least 100 and an optional
///   reason phrase;
/// - a response when no request is waiting for one.
///
/// Empty lines between responses are skipped, as llhttp skipped them.
///
/// Framing (RFC 9112 section 6.3): a response to `HEAD` (or `CONNECT`), a 1xx, 204 or 304 has no body
/// whatever its fields say; otherwise a chunked body, a `Content-Length` one, or, with neither, a body
/// delimited by the connection's close (``decodeEndOfInput(into:)`` ends it).
///
/// Informational responses are as NIO's decoder has them by default (`informationalResponseStrategy: .drop`):
/// a 1xx other than 101 is checked and dropped, and the request still waits for its final response. A `101`
/// is delivered (head and end) and ends HTTP on the connection (``hasHandedOff``): the bytes after it are
/// left unread for the tunnel that takes over. (llhttp also ends HTTP there.)
///
/// The head (status line plus header section, CRLFs included) may be at most
/// ``defaultLimits``'s 80 KiB, as NIO's default limit on a response's field names and values was.
///
/// It is not a channel handler: the backend connection's handler runs it on the connection's bytes, tells it
/// of each request head it writes (``expectResponse(to:)``, which pairs responses with requests), and it
/// delivers what it decodes to an ``HTTPResponseDecoderOutput`` by direct call. It works line by line and
/// remembers how far it has scanned, so byte-by-byte input costs O(n); bodies are streamed as they arrive.
public struct StrictHTTPResponseDecoder {
    public typealias Progress = StrictHTTPRequestDecoder.Progress
    public typealias Limits = HTTP1HeadLimits

    /// 80 KiB of head, the figure of NIO's `NIOHTTPDecoderLimitConfiguration` (which counted names and values
    /// only; this counts the whole head, so it is a little stricter), and NIO's field count.
    public static let defaultLimits = Limits(maxHeaderBytes: 80 * 1024, maxHeaderCount: Int(UInt16.max) - 1,
                                             maxChunkLineBytes: 4096)

    private enum State {
        /// Between responses: nothing of the next one seen yet.
        case idle
        case statusLine
        case headers
        /// In `body`.
        case body
        /// A `101` ended HTTP on this connection: bytes are held for the tunnel.
        case handedOff
    }

    private let limits: Limits
    private var state: State = .idle
    private var lines = HTTP1LineReader()
    private var body = HTTP1BodyDecoder(.untilClose)
    /// A request written and not answered yet.
    private struct ExpectedResponse {
        var method: HTTPMethod
        /// Its response's fields are kept as lines (``HTTP1FieldLines``), not made into strings.
        var relaysFieldLines: Bool
    }

    /// The requests written and not answered yet, oldest first.
    private var requests = CircularBuffer<ExpectedResponse>(initialCapacity: 4)
    private var version = HTTPVersion.http1_1
    private var status = 0
    /// The fields of the head being read, with room reserved as NIO's decoder reserves it.
    private var fields: [(String, String)] = []
    /// The lines of the head being read, when its request asked for them instead of `fields`.
    private var fieldLines: HTTP1FieldLines?
    /// The memory the last head's lines were kept in, cleared and used again for the next head's: by then the
    /// proxy has usually copied them out (if not, the buffer's copy-on-write gives the next head new memory).
    private var fieldLineMemory: ByteBuffer?

    /// Whether heads other than a `101`'s come without their hop-by-hop fields (``HTTP1HeadSummary/hopByHopLeftOut``
    /// says when they did), for a proxy that would drop them anyway.
    private let leavesOutHopByHop: Bool

    /// - Parameters:
    ///   - fieldTexts: the event loop's recent field texts, to take repeated ones from (nil: none).
    ///   - leavesOutHopByHop: whether heads other than a `101`'s come without the hop-by-hop fields
    ///     ``ProxyHeaders/removeHopByHop(from:)`` would take out, where the decoder can tell them by position
    ///     (``HTTP1HeadSummary/hopByHopLeftOut``). Their facts are in the summary either way.
    public init(limits: Limits = Self.defaultLimits, fieldTexts: FieldTextCache? = nil, leavesOutHopByHop: Bool = false) {
        self.limits = limits
        self.lines = HTTP1LineReader(fieldTexts: fieldTexts)
        self.leavesOutHopByHop = leavesOutHopByHop
    }

    /// A request head was written: the next response not yet paired answers it.
    /// - Parameter relayingFieldLines: that response's fields are to be kept as the lines they arrived in
    ///   (``HTTP1FieldLines``), delivered with an empty head by ``HTTPResponseDecoderOutput/received(head:summary:fieldLines:)``,
    ///   for a proxy that relays them unchanged. A head whose hop-by-hop fields cannot be left out by position,
    ///   whose equal `Content-Length`s are folded into one, or a `101`'s, comes with its fields as strings all the same.
    public mutating func expectResponse(to head: HTTPRequestHead, relayingFieldLines: Bool = false) {
        self.requests.append(ExpectedResponse(method: head.method, relaysFieldLines: relayingFieldLines))
    }

    /// A `101` ended HTTP on this connection: nothing more is decoded.
    public var hasHandedOff: Bool {
        if case .handedOff = self.state { return true }
        return false
    }

    /// One step: consumes what it can of `buffer` and tells `output` what it found. Throws an
    /// ``HTTP1SyntaxError`` when the input is refused; the decoder is then of no further use.
    public mutating func decode(_ buffer: inout ByteBuffer, into output: some HTTPResponseDecoderOutput) throws -> Progress {
        switch self.state {
        case .idle:
            switch try HTTP1LineReader.skipEmptyLine(&buffer) {
            case .needMoreData: return .needMoreData
            case .skippedEmptyLine: return .continue
            case .messageStarts: break
            }
            guard let request = self.requests.first else { throw HTTP1SyntaxError.malformed("a response without a request") }
            self.lines.startSection()
            if request.relaysFieldLines {
                var memory = self.fieldLineMemory.take() ?? ByteBuffer()
                memory.clear()
                self.fieldLines = HTTP1FieldLines(bytes: memory)
            } else {
                self.fields.reserveCapacity(16)
            }
            self.state = .statusLine
            return .continue

        case .statusLine:
            guard let line = try self.lines.nextSectionLine(buffer, limit: self.limits.maxHeaderBytes) else {
                return .needMoreData
            }
            try self.parseStatusLine(buffer, length: line.content)
            self.lines.consume(&buffer, line)
            self.state = .headers
            return .continue

        case .headers:
            if var lines = self.fieldLines.take() {
                // Taken out while read into, so that its buffer stays uniquely referenced.
                let complete = try self.lines.readFields(&buffer, into: &lines, limits: self.limits)
                self.fieldLines = lines
                guard complete else { return .needMoreData }
            } else {
                guard try self.lines.readFields(&buffer, into: &self.fields, limits: self.limits) else { return .needMoreData }
            }
            try self.finishHead(into: output)
            return .continue

        case .body:
            let step = try self.body.decode(&buffer, lines: &self.lines, limits: self.limits, into: output)
            if step == .ended { self.state = .idle }
            return step == .needMoreData ? .needMoreData : .continue

        case .handedOff:
            return .needMoreData
        }
    }

    /// The input ended (the backend closed): a response delimited by the close ends here. Throws when a
    /// response was cut short (its head, its length or its chunks incomplete), as llhttp did.
    public mutating func decodeEndOfInput(into output: some HTTPResponseDecoderOutput) throws {
        switch self.state {
        case .idle, .handedOff:
            return
        case .body where self.body.endsWithInput:
            self.state = .idle
            output.received(.end(nil))
        case .statusLine, .headers, .body:
            throw HTTP1SyntaxError.malformed("the input ended inside a response")
        }
    }

    // MARK: - Status line and framing

    /// `HTTP/1.1 200 OK`: the version, a status code of three digits from 100, and an optional reason phrase
    /// (dropped, as NIO's decoder dropped it: the status carries the standard one).
    private mutating func parseStatusLine(_ buffer: ByteBuffer, length: Int) throws {
        let parsed: (minor: Int, status: Int)? = buffer.withUnsafeReadableBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[0..<length])
            guard bytes.count >= 12, let minor = HTTP1Syntax.http1MinorVersion(startOf: bytes),
                bytes[8] == UInt8(ascii: " ")
            else { return nil }
            var status = 0
            for byte in bytes[9..<12] {
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
                status = status * 10 + Int(byte - UInt8(ascii: "0"))
            }
            guard status >= 100 else { return nil }
            if bytes.count > 12 {
                guard bytes[12] == UInt8(ascii: " "), HTTP1Syntax.areFieldValueChars(UnsafeRawBufferPointer(rebasing: bytes[13...])) else {
                    return nil
                }
            }
            return (minor, status)
        }
        guard let (minor, status) = parsed else { throw HTTP1SyntaxError.malformed("malformed status line") }
        self.version = minor == 1 ? .http1_1 : .http1_0
        self.status = status
    }

    /// Keeps a head's line memory for the next head, unless a large head made it large: a pooled connection
    /// would hold it for nothing (``HeadEncodingBuffer/keptCapacity``, as the loop's head memory does).
    private mutating func keepFieldLineMemory(_ memory: ByteBuffer) {
        self.fieldLineMemory = memory.capacity <= HeadEncodingBuffer.keptCapacity ? memory : nil
    }

    private mutating func finishHead(into output: some HTTPResponseDecoderOutput) throws {
        var summary = self.lines.summary
        var relayed = self.fieldLines.take()
        if let lines = relayed, self.status < 200 || summary.framing.foldsLengths || !summary.canLeaveOutHopByHop {
            // Read and edited as fields after all (see `expectResponse(to:relayingFieldLines:)`); a 1xx's are
            // checked, then dropped.
            self.fields = lines.fields(texts: self.lines.fieldTexts)
            self.keepFieldLineMemory(lines.bytes)
            relayed = nil
        }
        // RFC 9112 section 6.1: an HTTP/1.0 message with `Transfer-Encoding` has faulty framing. Read as chunked,
        // a client or cache behind another HTTP/1.0 hop would take the body by another rule; refused (a 502), as
        // the request side refuses it (a 400).
        if summary.framing.transferEncodings > 0 && self.version.minor == 0 {
            throw HTTP1SyntaxError.malformed("Transfer-Encoding in an HTTP/1.0 response")
        }
        // Checked whatever the status: a response whose framing is refused is refused even when bodiless.
        let framing = try HTTP1BodyFraming.of(&self.fields, summary: &summary)
        if self.status < 200 && self.status != 101 {
            // Informational: dropped, and the request still waits for its final response.
            self.fields = []
            self.state = .idle
            return
        }
        let method = self.requests.removeFirst().method
        if self.status == 101 {
            // Whole: the switch is read from its `Upgrade` and `Connection` fields.
            let head = HTTPResponseHead(version: self.version, status: .switchingProtocols,
                                        headers: HTTPHeaders(self.fields))
            self.fields = []
            self.state = .handedOff
            output.received(head: head, summary: summary)
            output.received(.end(nil))
            return
        }
        let status = HTTPResponseStatus(statusCode: self.status)
        var next = State.idle
        let bodiless = method.isHEAD || method.isCONNECT || self.status == 204 || self.status == 304
        if !bodiless, let body = framing.body(unframed: .untilClose) {
            self.body = body
            next = .body
        }
        self.state = next
        if var lines = relayed.take() {
            // Whatever `leavesOutHopByHop` says: the lines are relayed as they are, so these cannot stay.
            summary.leaveOutHopByHop(from: &lines)
            // Kept after the lines were edited in place: kept before, the edit would have copied them.
            self.keepFieldLineMemory(lines.bytes)
            output.received(head: HTTPResponseHead(version: self.version, status: status), summary: summary,
                            fieldLines: lines)
        } else {
            if self.leavesOutHopByHop {
                summary.leaveOutHopByHop(from: &self.fields)
            }
            let head = HTTPResponseHead(version: self.version, status: status, headers: HTTPHeaders(self.fields))
            self.fields = []
            // Handed over whole: the proxy edits the fields in place without a copy.
            output.received(head: consume head, summary: summary)
        }
        if case .idle = next {
            output.received(.end(nil))
        }
    }
}

@available(*, unavailable)
extension StrictHTTPResponseDecoder: Sendable {}

/// Where a ``StrictHTTPResponseDecoder`` delivers what it decodes, as it decodes it.
public protocol HTTPResponseDecoderOutput: HTTP1PartOutput where Head == HTTPResponseHead {
    func received(_ part: consuming HTTPClientResponsePart)
    /// A head, with what its fields said (by default passed on as a part, the summary dropped).
    func received(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary)
    /// A head whose request asked for its field lines (``StrictHTTPResponseDecoder/expectResponse(to:relayingFieldLines:)``):
    /// `head` has no fields, `fieldLines` has them without the hop-by-hop ones (``HTTP1HeadSummary/hopByHopLeftOut``).
    /// By default the fields are put back in the head, for an output that does not relay lines.
    func received(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines)
}

extension HTTPResponseDecoderOutput {
    public func received(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary) {
        self.received(.head(head))
    }

    public func received(head: consuming HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
        var head = head
        head.headers = fieldLines.headers
        self.received(head: head, summary: summary)
    }
}
