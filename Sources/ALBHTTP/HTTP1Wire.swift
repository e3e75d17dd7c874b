import NIOCore
import NIOHTTP1

// The HTTP/1 bytes of the messages the proxy writes, on both sides: responses to clients
// (`HTTP1ConnectionHandler`) and requests to backends (`BackendHTTP1Handler`), as NIO's encoders write them,
// without one handler per encoder and validator in each pipeline.

extension HTTPHeaders {
    /// The bytes of the fields as ``ByteBuffer/writeHTTP1Fields(_:encodedLength:)`` writes them, with the empty line.
    var http1EncodedLength: Int {
        var length = 2
        for (name, value) in self {
            length += name.utf8.count + value.utf8.count + 4
        }
        return length
    }
}

extension HTTPRequestHead {
    /// Whether the head may go on the wire: a request target of visible ASCII (no space, control byte or
    /// non-ASCII byte: what the edge's decoder takes, ``StrictHTTPRequestDecoder``), a method that is a token,
    /// and fields that are ``HTTPHeaders/areValidToSend``. A head that is not would split or smuggle a request on
    /// the backend connection.
    public var isValidToSend: Bool {
        Self.isValidRequestTarget(self.uri) && Self.isValidMethod(self.method) && self.headers.areValidToSend
    }

    /// ``isValidToSend`` without the fields, which ``ByteBuffer/writeHTTP1RequestHead(_:)`` checks as it
    /// copies them.
    public var hasValidRequestLineToSend: Bool {
        Self.isValidRequestTarget(self.uri) && Self.isValidMethod(self.method)
    }

    /// Visible ASCII, as the edge's decoder reads a target (and holds it to its forms), and as the HTTP/2 and HTTP/3
    /// edges hold a path to, so that what an edge takes can be sent on. Not RFC 3986's URI
    /// characters alone (NIO's `NIOHTTPRequestHeadersValidator`, this rule until the thirteenth session): browsers
    /// send `{`, `}`, `|`, `^` and `` ` `` in a query unencoded (the WHATWG URL standard's query percent-encode
    /// set leaves them), nginx and HAProxy pass them, and none of them can split a request. But not `#`: a target
    /// has no fragment (RFC 9112 section 3.2), and backends that cut it there and those that do not read two paths.
    public static func isValidRequestTarget(_ target: String) -> Bool {
        !target.isEmpty && target.utf8AllSatisfy { $0 &- 0x21 < 0x5E && $0 != UInt8(ascii: "#") }
    }

    static func isValidMethod(_ method: HTTPMethod) -> Bool {
        guard case .RAW(let name) = method else { return true }
        return ProxyHeaders.isToken(name)
    }

    /// The head with the framing NIO's `HTTPRequestEncoder` gives it, and whether its body is chunked: a
    /// method without a body (TRACE) loses `Content-Length` and `Transfer-Encoding`; a body with a length
    /// loses `Transfer-Encoding`; a POST, PUT or PATCH with neither, in HTTP/1.1, becomes chunked; other
    /// methods are chunked when they say so. The exchange frames its heads already, so the fields are
    /// usually left as they are (and not copied).
    public func framedForHTTP1() -> (head: HTTPRequestHead, chunked: Bool) {
        let headers = self.headers
        let http11 = self.version.major == 1 && self.version.minor >= 1
        var head = self
        // Both framing fields looked for in one pass (two look-ups cost about 270 instructions a request).
        var hasContentLength = false
        var transferEncoding: String?
        var transferEncodings = 0
        for (name, value) in headers {
            switch name.utf8.count {
            case 14 where HTTP1Syntax.equalsIgnoringASCIICase(name, "content-length"):
                hasContentLength = true
            case 17 where HTTP1Syntax.equalsIgnoringASCIICase(name, "transfer-encoding"):
                if transferEncoding == nil { transferEncoding = value }
                transferEncodings += 1
            default:
                break
            }
        }
        switch self.method {
        case .TRACE:
            if hasContentLength { head.headers.remove(name: "content-length") }
            if transferEncodings > 0 { head.headers.remove(name: "transfer-encoding") }
            return (head, false)
        case .POST, .PUT, .PATCH:
            if hasContentLength {
                if transferEncodings > 0 { head.headers.remove(name: "transfer-encoding") }
                return (head, false)
            }
            guard http11 else { return (head, false) }
            if transferEncodings != 1 || transferEncoding != "chunked" {
                head.headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            }
            return (head, true)
        default:
            if hasContentLength {
                if transferEncodings > 0 { head.headers.remove(name: "transfer-encoding") }
                return (head, false)
            }
            return (head, http11 && transferEncoding == "chunked")
        }
    }
}

extension HTTPHeaders {
    /// The value of the first field named `name` (given in lowercase), in any case: NIO's `first(name:)` for the
    /// proxy's own lookups. NIO compares each field's name by taking both strings' contiguous UTF-8
    /// (`withContiguousStorageIfAvailable`, tens of instructions a field) before it looks at their lengths; here
    /// the lengths go first, which rules out almost every field (callgrind: about 300 instructions a lookup in
    /// a head of eight fields against under 100).
    public func first(lowercased name: StaticString) -> String? {
        let length = name.utf8CodeUnitCount
        for (fieldName, value) in self where fieldName.utf8.count == length {
            if HTTP1Syntax.equalsIgnoringASCIICase(fieldName, name) { return value }
        }
        return nil
    }

    /// Whether a field is named `name` (given in lowercase), in any case: see ``first(lowercased:)``.
    public func contains(lowercased name: StaticString) -> Bool {
        self.first(lowercased: name) != nil
    }

    /// Whether every field may go on the wire, by NIO's rules (`NIOHTTPRequestHeadersValidator`): names are
    /// tokens (RFC 9110 section 5.6.2), values hold no control byte but HTAB (RFC 9110 section 5.5: CR, LF
    /// and NUL are dangerous, the other controls are refused as well).
    public var areValidToSend: Bool {
        for (name, value) in self {
            guard ProxyHeaders.isToken(name), value.utf8AllSatisfy(HTTP1Syntax.isFieldValueChar) else { return false }
        }
        return true
    }
}

extension ByteBuffer {
    /// The status line, the fields and the empty line that ends the head, as NIO's `HTTPResponseEncoder`
    /// writes them (`HTTP/1.1 200 OK`; the reason phrase may be empty, the space before it stays), copied into
    /// the buffer's memory in one pass (each `writeStaticString` cost about 150 instructions, callgrind). The
    /// backend's `fieldLines`, when given, come before the head's own fields.
    mutating func writeHTTP1ResponseHead(_ head: HTTPResponseHead, fieldLines: HTTP1FieldLines? = nil) {
        let fieldsLength = head.headers.http1EncodedLength + (fieldLines?.bytes.readableBytes ?? 0)
        let code = Int(head.status.code)
        let codeText = (100...999).contains(code) ? nil : String(code)
        let reason = head.status.reasonPhrase
        let version = HTTP1VersionText(head.version)
        let length = version.count + 1 + (codeText?.utf8.count ?? 3) + 1 + reason.utf8.count + 2 + fieldsLength
        let inline = SmallASCIIText.layoutMatches
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: length + HTTP1Syntax.inlineTextSlack) { memory in
            var offset = version.copy(to: memory, at: 0, inline: inline)
            memory[offset] = UInt8(ascii: " ")
            if let codeText {
                offset = memory.copyUTF8(of: codeText, at: offset + 1, inline: inline)
            } else {
                memory[offset + 1] = UInt8(ascii: "0") + UInt8(code / 100)
                memory[offset + 2] = UInt8(ascii: "0") + UInt8(code / 10 % 10)
                memory[offset + 3] = UInt8(ascii: "0") + UInt8(code % 10)
                offset += 4
            }
            memory[offset] = UInt8(ascii: " ")
            offset = memory.copyUTF8(of: reason, at: offset + 1, inline: inline)
            memory[offset] = UInt8(ascii: "\r")
            memory[offset + 1] = UInt8(ascii: "\n")
            offset += 2
            if let lines = fieldLines?.bytes, let target = memory.baseAddress {
                offset += lines.withUnsafeReadableBytes { bytes in
                    if let source = bytes.baseAddress { (target + offset).copyMemory(from: source, byteCount: bytes.count) }
                    return bytes.count
                }
            }
            return memory.copyHTTP1Fields(head.headers, at: offset, checked: false, inline: inline).end
        }
    }

    /// The request line, the fields and the empty line, as NIO's `HTTPRequestEncoder` writes them, copied into
    /// the buffer's memory in one pass. False when a field may not go on the wire (``HTTPHeaders/areValidToSend``'s
    /// rules, checked on the bytes where they were copied: checking the `String`s first cost about 1,400
    /// instructions a request, callgrind); the bytes written are then to be dropped.
    /// `fieldLines`: the client's fields as lines, but for those at the positions set in `leavingOut`, copied
    /// before the head's own fields (checked when they were read).
    mutating func writeHTTP1RequestHead(_ head: HTTPRequestHead, fieldLines: HTTP1FieldLines? = nil,
                                        leavingOut: UInt64 = 0) -> Bool {
        let fieldsLength = head.headers.http1EncodedLength + (fieldLines?.bytes.readableBytes ?? 0)
        let method = head.method.rawValue
        let version = HTTP1VersionText(head.version)
        let length = method.utf8.count + 1 + head.uri.utf8.count + 1 + version.count + 2 + fieldsLength
        var valid = true
        let inline = SmallASCIIText.layoutMatches
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: length + HTTP1Syntax.inlineTextSlack) { memory in
            var offset = memory.copyUTF8(of: method, at: 0, inline: inline)
            memory[offset] = UInt8(ascii: " ")
            offset = memory.copyUTF8(of: head.uri, at: offset + 1, inline: inline)
            memory[offset] = UInt8(ascii: " ")
            offset = version.copy(to: memory, at: offset + 1, inline: inline)
            memory[offset] = UInt8(ascii: "\r")
            memory[offset + 1] = UInt8(ascii: "\n")
            offset += 2
            if let fieldLines, let target = memory.baseAddress {
                offset += fieldLines.copy(to: target + offset, leavingOut: leavingOut)
            }
            let fields = memory.copyHTTP1Fields(head.headers, at: offset, checked: true, inline: inline)
            valid = fields.valid
            return fields.end
        }
        return valid
    }
}

/// `HTTP/1.1`, `HTTP/1.0`, or another version as text (not sent by the proxy, but encodable).
private struct HTTP1VersionText {
    private let other: String?
    private let minor: Int

    init(_ version: HTTPVersion) {
        self.minor = version.minor
        self.other = version.major == 1 && (version.minor == 0 || version.minor == 1)
            ? nil : "HTTP/\(version.major).\(version.minor)"
    }

    var count: Int { self.other?.utf8.count ?? 8 }

    func copy(to memory: UnsafeMutableRawBufferPointer, at offset: Int, inline: Bool) -> Int {
        if let other { return memory.copyUTF8(of: other, at: offset, inline: inline) }
        let word = self.minor == 1 ? HTTP1Syntax.http11 : HTTP1Syntax.http10
        memory.storeBytes(of: word.littleEndian, toByteOffset: offset, as: UInt64.self)
        return offset + 8
    }
}

extension ByteBufferAllocator {
    /// ``ByteBuffer/writeHTTP1ResponseHead(_:)`` into a buffer of its own (where no ``HeadEncodingBuffer``
    /// is at hand: tests, tools).
    func http1ResponseHead(_ head: HTTPResponseHead, fieldLines: HTTP1FieldLines? = nil) -> ByteBuffer {
        var bytes = self.buffer(capacity: 512)
        bytes.writeHTTP1ResponseHead(head, fieldLines: fieldLines)
        return bytes
    }

    /// ``ByteBuffer/writeHTTP1RequestHead(_:fieldLines:leavingOut:)`` into a buffer of its own; nil when a field
    /// may not go on the wire.
    public func http1RequestHead(_ head: HTTPRequestHead) -> ByteBuffer? {
        var bytes = self.buffer(capacity: 512)
        return bytes.writeHTTP1RequestHead(head) ? bytes : nil
    }

    /// The same, for a head whose client fields are lines.
    public func http1RequestHead(_ head: HTTPRequestHead, fieldLines: HTTP1FieldLines, leavingOut leftOut: UInt64) -> ByteBuffer? {
        var bytes = self.buffer(capacity: 512)
        return bytes.writeHTTP1RequestHead(head, fieldLines: fieldLines, leavingOut: leftOut) ? bytes : nil
    }
}

extension HeadEncodingBuffer {
    /// The head, and the first bytes of its body after it when given (copied).
    func http1ResponseHead(_ head: HTTPResponseHead, fieldLines: HTTP1FieldLines? = nil, body: ByteBuffer? = nil) -> ByteBuffer {
        self.encode { buffer in
            buffer.writeHTTP1ResponseHead(head, fieldLines: fieldLines)
            if let body { buffer.writeImmutableBuffer(body) }
        }
    }

    /// Nil when a field may not go on the wire.
    public func http1RequestHead(_ head: HTTPRequestHead) -> ByteBuffer? {
        var valid = false
        let bytes = self.encode { valid = $0.writeHTTP1RequestHead(head) }
        return valid ? bytes : nil
    }

    /// A head whose client fields are `fieldLines` but those at the positions set in `leftOut`, before its own;
    /// nil when one of its own fields may not go on the wire.
    public func http1RequestHead(_ head: HTTPRequestHead, fieldLines: HTTP1FieldLines, leavingOut leftOut: UInt64) -> ByteBuffer? {
        var valid = false
        let bytes = self.encode { valid = $0.writeHTTP1RequestHead(head, fieldLines: fieldLines, leavingOut: leftOut) }
        return valid ? bytes : nil
    }
}

extension ByteBuffer {
    /// `name: value` CRLF per field, then the empty line (a head's fields, or a last chunk's trailers), copied
    /// into the buffer's memory in one pass: writing each name, separator, value and CRLF through the buffer's
    /// own calls checked capacity and ownership four times a field.
    /// - Parameters:
    ///   - encodedLength: `fields.http1EncodedLength`, when the caller has it already.
    mutating func writeHTTP1Fields(_ fields: HTTPHeaders, encodedLength: Int? = nil) {
        let length = (encodedLength ?? fields.http1EncodedLength) + HTTP1Syntax.inlineTextSlack
        let inline = SmallASCIIText.layoutMatches
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { memory in
            memory.copyHTTP1Fields(fields, at: 0, checked: false, inline: inline).end
        }
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Copies the fields (`name: value` CRLF each) and the empty line to `offset`; the caller has made room
    /// (``HTTPHeaders/http1EncodedLength``). With `checked`, each name and value is checked where it was copied,
    /// by ``HTTPHeaders/areValidToSend``'s rules: `valid` is false when a field may not go on the wire (all of
    /// them are copied all the same).
    fileprivate func copyHTTP1Fields(_ fields: HTTPHeaders, at start: Int, checked: Bool,
                                     inline: Bool) -> (end: Int, valid: Bool) {
        var valid = true
        var offset = start
        for (name, value) in fields {
            let nameStart = offset
            offset = self.copyUTF8(of: name, at: offset, inline: inline)
            if checked && !HTTP1Syntax.areTokenChars(UnsafeRawBufferPointer(rebasing: self[nameStart..<offset])) {
                valid = false
            }
            self[offset] = UInt8(ascii: ":")
            self[offset + 1] = UInt8(ascii: " ")
            let valueStart = offset + 2
            offset = self.copyUTF8(of: value, at: valueStart, inline: inline)
            if checked && !HTTP1Syntax.areFieldValueChars(UnsafeRawBufferPointer(rebasing: self[valueStart..<offset])) {
                valid = false
            }
            self[offset] = UInt8(ascii: "\r")
            self[offset + 1] = UInt8(ascii: "\n")
            offset += 2
        }
        self[offset] = UInt8(ascii: "\r")
        self[offset + 1] = UInt8(ascii: "\n")
        return (offset + 2, valid)
    }

    /// Copies the UTF-8 of `text` to `offset` and returns the offset after it. The caller has made room
    /// (``HTTPHeaders/http1EncodedLength``) and ``HTTP1Syntax/inlineTextSlack`` more after all it writes.
    ///
    /// Text held inline in its string (up to 15 ASCII bytes: most names and values) is stored as the string's two
    /// words, when `inline` (``SmallASCIIText/layoutMatches``): the bytes past the text are overwritten by what
    /// is written after it, or lie in the slack past the end. A `memcpy` through `withContiguousStorageIfAvailable`
    /// cost about 75 instructions a text (callgrind). Other native strings are one `memcpy`; a bridged one goes
    /// byte by byte. The two stores are inlined where the text is copied and the rest is a call: as one function,
    /// called 15 times a proxied request, its entry and exit (the registers the `memcpy` path needs saved) took
    /// about 30 instructions a text; split, a request takes about 125 fewer (callgrind).
    @inline(__always)
    fileprivate func copyUTF8(of text: String, at offset: Int, inline: Bool) -> Int {
        if inline, let (first, second, count) = SmallASCIIText.inlineWords(text, layoutChecked: ()) {
            self.storeBytes(of: first, toByteOffset: offset, as: UInt64.self)
            self.storeBytes(of: second, toByteOffset: offset + 8, as: UInt64.self)
            return offset + count
        }
        return self.copyUTF8Bytes(of: text, at: offset)
    }

    @inline(never)
    private func copyUTF8Bytes(of text: String, at offset: Int) -> Int {
        let copied = text.utf8.withContiguousStorageIfAvailable { bytes -> Int in
            UnsafeMutableRawBufferPointer(rebasing: self[offset..<(offset + bytes.count)])
                .copyMemory(from: UnsafeRawBufferPointer(bytes))
            return bytes.count
        }
        if let copied { return offset + copied }
        var end = offset
        for byte in text.utf8 {
            self[end] = byte
            end += 1
        }
        return end
    }
}

/// The body of one HTTP/1 message on the wire, after its head: chunks with their size lines when the head
/// said `Transfer-Encoding: chunked`, the bytes as they are otherwise; the end is the last chunk with the
/// trailers, or nothing. Each write keeps its promise, completed in order with the writes around it.
public struct HTTP1BodyWriter {
    /// The message being written has a chunked body.
    public private(set) var isChunked = false

    public init() {}

    /// A new message starts, with a head that made its body chunked or not.
    public mutating func start(chunked: Bool) {
        self.isChunked = chunked
    }

    /// A body part. A chunk of up to ``copiedChunkBytes`` goes out as one buffer with its size line and CRLF
    /// (one write where there were three, and no more allocations: the size line had a buffer of its own); a
    /// larger one is not copied, its size line and CRLF go around it. An empty part is not framed (it would end
    /// the body) but still written, so its promise completes in order.
    public func write(_ part: IOData, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard self.isChunked && part.readableBytes > 0 else {
            context.write(NIOAny(part), promise: promise)
            return
        }
        let size = String(part.readableBytes, radix: 16)
        if case .byteBuffer(let bytes) = part, bytes.readableBytes <= Self.copiedChunkBytes {
            var chunk = context.channel.allocator.buffer(capacity: size.utf8.count + bytes.readableBytes + 4)
            chunk.writeString(size)
            chunk.writeStaticString("\r\n")
            chunk.writeImmutableBuffer(bytes)
            chunk.writeStaticString("\r\n")
            context.write(NIOAny(IOData.byteBuffer(chunk)), promise: promise)
            return
        }
        var sizeLine = context.channel.allocator.buffer(capacity: 18)
        sizeLine.writeString(size)
        sizeLine.writeStaticString("\r\n")
        context.write(NIOAny(IOData.byteBuffer(sizeLine)), promise: nil)
        context.write(NIOAny(part), promise: nil)
        context.write(NIOAny(IOData.byteBuffer(Self.crlf)), promise: promise)
    }

    /// Chunks up to this size are copied into one buffer with their framing: a write costs NIO about 1,000
    /// instructions (callgrind), a 2 KiB copy about a tenth of that.
    static let copiedChunkBytes = 2048

    /// The end of the message: the last chunk and the trailers when chunked (trailers are dropped
    /// otherwise, as HTTP/1 has no place for them), else nothing, with the promise completed in order.
    public mutating func end(_ trailers: HTTPHeaders?, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if self.isChunked {
            self.isChunked = false
            var lastChunk = context.channel.allocator.buffer(capacity: trailers == nil ? 5 : 256)
            lastChunk.writeStaticString("0\r\n")
            lastChunk.writeHTTP1Fields(trailers ?? HTTPHeaders())  // ends with the empty line
            context.write(NIOAny(IOData.byteBuffer(lastChunk)), promise: promise)
        } else if let promise {
            // Nothing to write, but the promise completes after what was written before it.
            context.write(NIOAny(IOData.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
        }
    }

    private static let crlf = ByteBuffer(string: "\r\n")
}
