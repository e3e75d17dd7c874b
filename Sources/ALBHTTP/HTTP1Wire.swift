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
    /// Whether the head may go on the wire, by the rules of NIO's `NIOHTTPRequestHeadersValidator`: a
    /// request target of URI characters only (RFC 9112 section 3.2: anything else percent-encoded, so no
    /// space, control byte or non-ASCII byte), a method that is a token, and fields that are
    /// ``HTTPHeaders/areValidToSend``. A head that is not would split or smuggle a request on the backend
    /// connection.
    public var isValidToSend: Bool {
        Self.isValidRequestTarget(self.uri) && Self.isValidMethod(self.method) && self.headers.areValidToSend
    }

    /// ``isValidToSend`` without the fields, which ``ByteBuffer/writeHTTP1RequestHead(_:)`` checks as it
    /// copies them.
    public var hasValidRequestLineToSend: Bool {
        Self.isValidRequestTarget(self.uri) && Self.isValidMethod(self.method)
    }

    static func isValidRequestTarget(_ target: String) -> Bool {
        target.utf8AllSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"),  // unreserved
                UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#"),  // gen-delims
                UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "@"),
                UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"),  // sub-delims
                UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"),
                UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="),
                UInt8(ascii: "%"):  // pct-encoded
                return true
            default:
                return false
            }
        }
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
        switch self.method {
        case .TRACE:
            if headers.contains(name: "content-length") { head.headers.remove(name: "content-length") }
            if headers.contains(name: "transfer-encoding") { head.headers.remove(name: "transfer-encoding") }
            return (head, false)
        case .POST, .PUT, .PATCH:
            if headers.contains(name: "content-length") {
                if headers.contains(name: "transfer-encoding") { head.headers.remove(name: "transfer-encoding") }
                return (head, false)
            }
            guard http11 else { return (head, false) }
            if headers["transfer-encoding"] != ["chunked"] {
                head.headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            }
            return (head, true)
        default:
            if headers.contains(name: "content-length") {
                if headers.contains(name: "transfer-encoding") { head.headers.remove(name: "transfer-encoding") }
                return (head, false)
            }
            return (head, http11 && headers.first(name: "transfer-encoding") == "chunked")
        }
    }
}

extension HTTPHeaders {
    /// Whether every field may go on the wire, by NIO's rules (`NIOHTTPRequestHeadersValidator`): names are
    /// tokens (RFC 9110 section 5.6.2), values hold no control byte but HTAB (RFC 9110 section 5.5: CR, LF
    /// and NUL are dangerous, the other controls are refused as well).
    public var areValidToSend: Bool {
        for (name, value) in self {
            guard ProxyHeaders.isToken(name) else { return false }
            guard value.utf8AllSatisfy({ $0 == UInt8(ascii: "\t") || ($0 > 0x1F && $0 != 0x7F) }) else {
                return false
            }
        }
        return true
    }
}

extension ByteBuffer {
    /// The status line, the fields and the empty line that ends the head, as NIO's `HTTPResponseEncoder`
    /// writes them (`HTTP/1.1 200 OK`; the reason phrase may be empty, the space before it stays), with room
    /// made once for all of it (24 bytes of slack cover a version other than 1.x and a status code of more
    /// than three digits).
    mutating func writeHTTP1ResponseHead(_ head: HTTPResponseHead) {
        let fieldsLength = head.headers.http1EncodedLength
        self.reserveCapacity(minimumWritableBytes: "HTTP/1.1 000 \r\n".utf8.count
                                + head.status.reasonPhrase.utf8.count + 24 + fieldsLength)
        self.writeHTTP1Version(head.version)
        self.writeStaticString(" ")
        let code = Int(head.status.code)
        if (100...999).contains(code) {
            self.writeInteger(UInt8(ascii: "0") + UInt8(code / 100))
            self.writeInteger(UInt8(ascii: "0") + UInt8(code / 10 % 10))
            self.writeInteger(UInt8(ascii: "0") + UInt8(code % 10))
        } else {
            self.writeString(String(code))
        }
        self.writeStaticString(" ")
        self.writeString(head.status.reasonPhrase)
        self.writeStaticString("\r\n")
        self.writeHTTP1Fields(head.headers, encodedLength: fieldsLength)
    }

    /// The request line, the fields and the empty line, as NIO's `HTTPRequestEncoder` writes them, with room
    /// made once for all of it. False when a field may not go on the wire (``HTTPHeaders/areValidToSend``'s
    /// rules, checked on the bytes where they were copied: checking the `String`s first cost about 1,400
    /// instructions a request, callgrind); the bytes written are then to be dropped.
    mutating func writeHTTP1RequestHead(_ head: HTTPRequestHead) -> Bool {
        let fieldsLength = head.headers.http1EncodedLength
        self.reserveCapacity(minimumWritableBytes: head.method.rawValue.utf8.count + head.uri.utf8.count
                                + " HTTP/1.1\r\n".utf8.count + 24 + fieldsLength)
        switch head.method {
        case .GET: self.writeStaticString("GET")
        case .POST: self.writeStaticString("POST")
        default: self.writeString(head.method.rawValue)
        }
        self.writeStaticString(" ")
        self.writeString(head.uri)
        self.writeStaticString(" ")
        self.writeHTTP1Version(head.version)
        self.writeStaticString("\r\n")
        return self.writeHTTP1Fields(head.headers, encodedLength: fieldsLength, checked: true)
    }
}

extension ByteBufferAllocator {
    /// ``ByteBuffer/writeHTTP1ResponseHead(_:)`` into a buffer of its own (where no ``HeadEncodingBuffer``
    /// is at hand: tests, tools).
    func http1ResponseHead(_ head: HTTPResponseHead) -> ByteBuffer {
        var bytes = self.buffer(capacity: 512)
        bytes.writeHTTP1ResponseHead(head)
        return bytes
    }

    /// ``ByteBuffer/writeHTTP1RequestHead(_:)`` into a buffer of its own; nil when a field may not go on the wire.
    public func http1RequestHead(_ head: HTTPRequestHead) -> ByteBuffer? {
        var bytes = self.buffer(capacity: 512)
        return bytes.writeHTTP1RequestHead(head) ? bytes : nil
    }
}

extension HeadEncodingBuffer {
    func http1ResponseHead(_ head: HTTPResponseHead) -> ByteBuffer {
        self.encode { $0.writeHTTP1ResponseHead(head) }
    }

    /// Nil when a field may not go on the wire.
    public func http1RequestHead(_ head: HTTPRequestHead) -> ByteBuffer? {
        var valid = false
        let bytes = self.encode { valid = $0.writeHTTP1RequestHead(head) }
        return valid ? bytes : nil
    }
}

extension ByteBuffer {
    fileprivate mutating func writeHTTP1Version(_ version: HTTPVersion) {
        switch (version.major, version.minor) {
        case (1, 1): self.writeStaticString("HTTP/1.1")
        case (1, 0): self.writeStaticString("HTTP/1.0")
        default: self.writeString("HTTP/\(version.major).\(version.minor)")
        }
    }

    /// `name: value` CRLF per field, then the empty line (a head's fields, or a last chunk's trailers). One
    /// copy into the buffer's memory for the whole section: writing each name, separator, value and CRLF
    /// through the buffer's own calls checked capacity and ownership four times a field.
    /// - Parameters:
    ///   - encodedLength: `fields.http1EncodedLength`, when the caller has it already.
    ///   - checked: whether to check each name and value as copied, by ``HTTPHeaders/areValidToSend``'s rules.
    /// - Returns: false when `checked` and a field may not go on the wire (all of it is written all the same).
    @discardableResult
    mutating func writeHTTP1Fields(_ fields: HTTPHeaders, encodedLength: Int? = nil, checked: Bool = false) -> Bool {
        var valid = true
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: encodedLength ?? fields.http1EncodedLength) { memory in
            var offset = 0
            for (name, value) in fields {
                let nameStart = offset
                offset = memory.copyUTF8(of: name, at: offset)
                if checked && !HTTP1Syntax.areTokenChars(UnsafeRawBufferPointer(rebasing: memory[nameStart..<offset])) {
                    valid = false
                }
                memory[offset] = UInt8(ascii: ":")
                memory[offset + 1] = UInt8(ascii: " ")
                let valueStart = offset + 2
                offset = memory.copyUTF8(of: value, at: valueStart)
                if checked
                    && !HTTP1Syntax.areFieldValueChars(UnsafeRawBufferPointer(rebasing: memory[valueStart..<offset])) {
                    valid = false
                }
                memory[offset] = UInt8(ascii: "\r")
                memory[offset + 1] = UInt8(ascii: "\n")
                offset += 2
            }
            memory[offset] = UInt8(ascii: "\r")
            memory[offset + 1] = UInt8(ascii: "\n")
            return offset + 2
        }
        return valid
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Copies the UTF-8 of `text` to `offset` and returns the offset after it. The caller has made room
    /// (``HTTPHeaders/http1EncodedLength``). A native string is one `memcpy`; a bridged one goes byte by byte.
    fileprivate func copyUTF8(of text: String, at offset: Int) -> Int {
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
    private var chunked = false

    public init() {}

    /// A new message starts, with a head that made its body chunked or not.
    public mutating func start(chunked: Bool) {
        self.chunked = chunked
    }

    /// A body part. The chunk itself is not copied: its size line and CRLF go around it. An empty part is not
    /// framed (it would end the body) but still written, so its promise completes in order.
    public func write(_ part: IOData, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard self.chunked && part.readableBytes > 0 else {
            context.write(NIOAny(part), promise: promise)
            return
        }
        var sizeLine = context.channel.allocator.buffer(capacity: 18)
        sizeLine.writeString(String(part.readableBytes, radix: 16))
        sizeLine.writeStaticString("\r\n")
        context.write(NIOAny(IOData.byteBuffer(sizeLine)), promise: nil)
        context.write(NIOAny(part), promise: nil)
        context.write(NIOAny(IOData.byteBuffer(Self.crlf)), promise: promise)
    }

    /// The end of the message: the last chunk and the trailers when chunked (trailers are dropped
    /// otherwise, as HTTP/1 has no place for them), else nothing, with the promise completed in order.
    public mutating func end(_ trailers: HTTPHeaders?, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if self.chunked {
            self.chunked = false
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
