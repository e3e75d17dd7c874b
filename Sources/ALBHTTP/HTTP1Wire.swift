import NIOCore
import NIOHTTP1

extension HTTPResponseHead {
    /// At least the bytes ``ByteBuffer/writeHTTP1ResponseHead(_:)`` writes for this head, so its buffer is
    /// allocated once instead of growing (24 bytes of slack cover a version other than 1.x and a status
    /// code of more than three digits).
    var http1EncodedLength: Int {
        var length = "HTTP/1.1 000 \r\n\r\n".utf8.count + self.status.reasonPhrase.utf8.count + 24
        for (name, value) in self.headers {
            length += name.utf8.count + value.utf8.count + 4
        }
        return length
    }
}

extension ByteBuffer {
    /// The status line, the fields and the empty line that ends the head, as NIO's `HTTPResponseEncoder`
    /// writes them (`HTTP/1.1 200 OK`; the reason phrase may be empty, the space before it stays).
    mutating func writeHTTP1ResponseHead(_ head: HTTPResponseHead) {
        switch (head.version.major, head.version.minor) {
        case (1, 1): self.writeStaticString("HTTP/1.1 ")
        case (1, 0): self.writeStaticString("HTTP/1.0 ")
        default: self.writeString("HTTP/\(head.version.major).\(head.version.minor) ")
        }
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
        self.writeHTTP1Fields(head.headers)
    }

    /// `name: value` CRLF per field, then the empty line (a head's fields, or a last chunk's trailers).
    mutating func writeHTTP1Fields(_ fields: HTTPHeaders) {
        for (name, value) in fields {
            self.writeString(name)
            self.writeStaticString(": ")
            self.writeString(value)
            self.writeStaticString("\r\n")
        }
        self.writeStaticString("\r\n")
    }
}
