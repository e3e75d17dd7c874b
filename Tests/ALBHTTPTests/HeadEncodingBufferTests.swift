@testable import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

final class HeadEncodingBufferTests: XCTestCase {
    private let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a", headers: ["Host": "h"])
    private let response = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "2"])

    private func storageAddress(_ buffer: ByteBuffer) -> UnsafeRawPointer? {
        buffer.withUnsafeReadableBytes { UnsafeRawPointer($0.baseAddress) }
    }

    func testAHeadWrittenOutIsFollowedByTheNextInTheSameMemory() {
        let heads = HeadEncodingBuffer()
        var first: ByteBuffer? = heads.http1RequestHead(self.request)
        XCTAssertEqual(first.map { String(buffer: $0) }, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        let address = first.flatMap(self.storageAddress)
        first = nil  // the socket wrote it
        let second = heads.http1ResponseHead(self.response)
        XCTAssertEqual(String(buffer: second), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        XCTAssertEqual(self.storageAddress(second), address)
    }

    func testAHeadStillWaitingToBeWrittenIsNeverOverwritten() throws {
        let heads = HeadEncodingBuffer()
        let pending = heads.http1ResponseHead(self.response)
        let next = try XCTUnwrap(heads.http1RequestHead(self.request))
        XCTAssertEqual(String(buffer: pending), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        XCTAssertEqual(String(buffer: next), "GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        XCTAssertNotEqual(self.storageAddress(pending), self.storageAddress(next))
    }

    /// Heads around the size of a head's own buffer (512 bytes), a byte more each time: each is encoded whole,
    /// the buffer growing when it must.
    func testHeadsOfEverySizeAroundTheFirstRoomAreEncodedWhole() throws {
        let allocator = ByteBufferAllocator()
        for length in 380...560 {
            let value = String(repeating: "v", count: length)
            let response = HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("A", "1"), ("X-Long", value)]))
            XCTAssertEqual(String(buffer: allocator.http1ResponseHead(response)),
                           "HTTP/1.1 200 OK\r\nA: 1\r\nX-Long: \(value)\r\n\r\n", "\(length)")
            let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("Host", "h"), ("X-Long", value)]))
            let encoded = try XCTUnwrap(allocator.http1RequestHead(request))
            XCTAssertEqual(String(buffer: encoded), "GET / HTTP/1.1\r\nHost: h\r\nX-Long: \(value)\r\n\r\n", "\(length)")
        }
    }

    /// Short texts are stored as their strings' two words, 16 bytes whatever their length: with a short text of
    /// every length last, in heads ending around the buffer's first room, each head is whole and exact, and a
    /// head still waiting to be written is untouched by the next one.
    func testShortTextsOfEveryLengthEndHeadsExactly() throws {
        let heads = HeadEncodingBuffer()
        for padding in stride(from: 420, through: 520, by: 7) {
            for count in 0...15 {
                let short = String(repeating: "s", count: count)
                let fill = String(repeating: "f", count: padding)
                let response = HTTPResponseHead(version: .http1_1, status: .ok,
                                                headers: HTTPHeaders([("X-Fill", fill), ("X", short)]))
                let pending = heads.http1ResponseHead(response)
                let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/" + short,
                                              headers: HTTPHeaders([("X-Fill", fill), (short.isEmpty ? "E" : short, short)]))
                let next = try XCTUnwrap(heads.http1RequestHead(request))
                XCTAssertEqual(String(buffer: pending), "HTTP/1.1 200 OK\r\nX-Fill: \(fill)\r\nX: \(short)\r\n\r\n")
                XCTAssertEqual(String(buffer: next), "GET /\(short) HTTP/1.1\r\nX-Fill: \(fill)\r\n"
                                   + "\(short.isEmpty ? "E" : short): \(short)\r\n\r\n")
            }
        }
    }

    /// Heads of 1 to 60 fields, in a head's own buffer (512 bytes) and in the loop's head memory, so that the
    /// room first at hand is outgrown after any field: the head is written whole, and a request with a field
    /// that may not be sent is refused at every size.
    func testAHeadThatOutgrowsTheRoomAtHandAfterAnyFieldIsWrittenWholeOrRefused() {
        let allocator = ByteBufferAllocator()
        let heads = HeadEncodingBuffer()
        for count in 1...60 {
            let fields = (0..<count).map { ("X-Field-\($0)", String(repeating: "v", count: 12)) }
            let lines = fields.map { "\($0.0): \($0.1)\r\n" }.joined()
            let response = HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders(fields))
            XCTAssertEqual(String(buffer: allocator.http1ResponseHead(response)), "HTTP/1.1 200 OK\r\n\(lines)\r\n")
            XCTAssertEqual(String(buffer: heads.http1ResponseHead(response)), "HTTP/1.1 200 OK\r\n\(lines)\r\n")
            let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders(fields))
            XCTAssertEqual(allocator.http1RequestHead(request).map { String(buffer: $0) }, "GET / HTTP/1.1\r\n\(lines)\r\n")
            var refused = request
            refused.headers.add(name: "X-Bad", value: "a\u{01}b")
            XCTAssertNil(allocator.http1RequestHead(refused), "\(count) fields")
            XCTAssertNil(heads.http1RequestHead(refused), "\(count) fields")
        }
    }

    func testALargeHeadIsEncodedWholeAndItsMemoryIsNotKept() {
        let heads = HeadEncodingBuffer()
        var large = self.response
        large.headers.add(name: "Set-Cookie", value: String(repeating: "c", count: 10_000))
        let encoded = heads.http1ResponseHead(large)
        XCTAssertEqual(String(buffer: encoded), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: "
                           + String(repeating: "c", count: 10_000) + "\r\n\r\n")
        let next = heads.http1ResponseHead(self.response)
        XCTAssertLessThanOrEqual(next.capacity, HeadEncodingBuffer.keptCapacity)
        XCTAssertEqual(String(buffer: next), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    }

    /// Through the connection handler: each response on a keep-alive connection is whole, also when the
    /// previous one is still held by the channel.
    func testResponsesOnAConnectionAreWholeWithASharedHeadBuffer() throws {
        let heads = HeadEncodingBuffer()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(
            HTTP1ConnectionHandler(headerTimeout: .seconds(5), idleTimeout: { .seconds(60) }, headBuffer: heads))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        for index in 0..<3 {
            try channel.writeInbound(ByteBuffer(string: "GET /\(index) HTTP/1.1\r\nHost: h\r\n\r\n"))
            XCTAssertNotNil(try channel.readInbound(as: HTTPServerRequestPart.self))
            XCTAssertNotNil(try channel.readInbound(as: HTTPServerRequestPart.self))
            var head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "1"])
            head.headers.add(name: "X-Index", value: "\(index)")
            channel.write(HTTPServerResponsePart.head(head), promise: nil)
            channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "\(index)"))), promise: nil)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        }
        var text = ""
        while var bytes = try channel.readOutbound(as: IOData.self).flatMap({ data -> ByteBuffer? in
            if case .byteBuffer(let buffer) = data { return buffer }
            return nil
        }) {
            text += bytes.readString(length: bytes.readableBytes) ?? ""
        }
        XCTAssertEqual(text, (0..<3).map { "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Index: \($0)\r\n\r\n\($0)" }.joined())
    }

    /// A connection handler on a shared head buffer, with one request read, and what it writes.
    private func servingConnection(_ heads: HeadEncodingBuffer) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(
            HTTP1ConnectionHandler(headerTimeout: .seconds(5), idleTimeout: { .seconds(60) }, headBuffer: heads))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        XCTAssertNotNil(try channel.readInbound(as: HTTPServerRequestPart.self))
        XCTAssertNotNil(try channel.readInbound(as: HTTPServerRequestPart.self))
        return channel
    }

    /// Each buffer the socket was given, as text.
    private func writes(_ channel: EmbeddedChannel) throws -> [String] {
        var writes: [String] = []
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { return writes + ["(file region)"] }
            writes.append(String(buffer: buffer))
        }
        return writes
    }

    /// A small body goes out in the head's buffer: one write where there were two.
    func testASmallBodyIsWrittenWithItsHead() throws {
        let channel = try self.servingConnection(HeadEncodingBuffer())
        channel.write(HTTPServerResponsePart.head(self.response), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        XCTAssertEqual(try self.writes(channel), ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    }

    /// A large body, a chunked one, a head with no body part, and a head flushed before its body: the head
    /// goes out on its own, first, and nothing is lost or reordered.
    func testOtherwiseTheHeadIsWrittenFirstOnItsOwn() throws {
        let large = String(repeating: "b", count: HTTP1ConnectionHandler.bodyBytesWrittenWithTheHead + 1)
        var channel = try self.servingConnection(HeadEncodingBuffer())
        var head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "\(large.utf8.count)"])
        channel.write(HTTPServerResponsePart.head(head), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: large))), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        XCTAssertEqual(try self.writes(channel), ["HTTP/1.1 200 OK\r\nContent-Length: 2049\r\n\r\n", large])

        channel = try self.servingConnection(HeadEncodingBuffer())
        head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Transfer-Encoding": "chunked"])
        channel.write(HTTPServerResponsePart.head(head), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        XCTAssertEqual(try self.writes(channel).joined(),
                       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")

        channel = try self.servingConnection(HeadEncodingBuffer())
        head = HTTPResponseHead(version: .http1_1, status: .noContent)
        channel.write(HTTPServerResponsePart.head(head), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        XCTAssertEqual(try self.writes(channel), ["HTTP/1.1 204 No Content\r\n\r\n"])

        channel = try self.servingConnection(HeadEncodingBuffer())
        channel.writeAndFlush(HTTPServerResponsePart.head(self.response), promise: nil)
        XCTAssertEqual(try self.writes(channel), ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"],
                       "a flush writes a held head: a body arriving later does not hold it back")
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        XCTAssertEqual(try self.writes(channel), ["ok"])
    }

    /// The backend fields of `response` (a whole response head) as lines, as the decoder relays them.
    private func fieldLines(_ response: String) throws -> HTTP1FieldLines {
        final class Lines: HTTPResponseDecoderOutput {
            var lines: HTTP1FieldLines?
            func received(_ part: HTTPClientResponsePart) {}
            func received(head: HTTPResponseHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
                self.lines = fieldLines
            }
        }
        var decoder = StrictHTTPResponseDecoder()
        decoder.expectResponse(to: self.request, relayingFieldLines: true)
        var bytes = ByteBuffer(string: response)
        let output = Lines()
        while try decoder.decode(&bytes, into: output) == .continue {}
        return try XCTUnwrap(output.lines)
    }

    /// A head relayed with the backend's lines: the status line, the lines as they came, the head's own fields,
    /// the empty line; with a small body in the same write, and on its own when the body comes later, held or
    /// not (no loop memory); `connection: close` after the lines when the connection drains.
    func testARelayedHeadIsItsStatusLineTheBackendsLinesAndItsOwnFields() throws {
        let lines = try self.fieldLines("HTTP/1.1 200 OK\r\nServer:  x \r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n")
        var head = HTTPResponseHead(version: .http1_1, status: .ok)
        head.headers.add(name: "set-cookie", value: "s=1")
        for heads in [HeadEncodingBuffer(), nil] {
            let channel = EmbeddedChannel()
            let handler = HTTP1ConnectionHandler(headerTimeout: .seconds(5), idleTimeout: { .seconds(60) }, headBuffer: heads)
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            for drain in [false, true] {
                try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
                XCTAssertNotNil(try channel.readInbound(as: HTTPServerRequestPart.self))
                XCTAssertNotNil(try channel.readInbound(as: HTTPServerRequestPart.self))
                if drain { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
                handler.write(head: head, fieldLines: lines, promise: nil)
                handler.write(.body(.byteBuffer(ByteBuffer(string: "ok"))), promise: nil)
                handler.write(.end(nil), promise: nil)
                handler.flush()
                let close = drain ? "connection: close\r\n" : ""
                let expected = "HTTP/1.1 200 OK\r\nServer:  x \r\nContent-Length: 2\r\nset-cookie: s=1\r\n\(close)\r\n"
                // (The end of a response on a draining connection is an empty write of its own.)
                XCTAssertEqual(try self.writes(channel).filter { !$0.isEmpty }, heads == nil ? [expected, "ok"] : [expected + "ok"])
            }
            _ = try? channel.finish()
        }
    }

    /// A small chunk goes out as one buffer with its size line and CRLF; a large one is framed around,
    /// not copied.
    func testASmallChunkIsOneWriteWithItsFraming() throws {
        let channel = try self.servingConnection(HeadEncodingBuffer())
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Transfer-Encoding": "chunked"])
        let large = String(repeating: "b", count: HTTP1BodyWriter.copiedChunkBytes + 1)
        channel.write(HTTPServerResponsePart.head(head), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: large))), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        XCTAssertEqual(try self.writes(channel), [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "2\r\nok\r\n", "801\r\n", large, "\r\n",
            "0\r\n\r\n",
        ])
    }

    /// The promises of a held head and of the body written with it both complete.
    func testPromisesOfAHeadWrittenWithItsBodyComplete() throws {
        let channel = try self.servingConnection(HeadEncodingBuffer())
        let headWritten = channel.eventLoop.makePromise(of: Void.self)
        let bodyWritten = channel.eventLoop.makePromise(of: Void.self)
        channel.write(HTTPServerResponsePart.head(self.response), promise: headWritten)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))), promise: bodyWritten)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        XCTAssertNoThrow(try headWritten.futureResult.wait())
        XCTAssertNoThrow(try bodyWritten.futureResult.wait())
        XCTAssertEqual(try self.writes(channel).joined(), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    }

    /// A request head is refused exactly when ``HTTPHeaders/areValidToSend`` refuses its fields, checked on
    /// the copied bytes: each byte value in a name, and in values long enough for the word-at-a-time check with
    /// the byte at every position, and the memory is still used for the next head.
    func testARequestHeadIsRefusedExactlyWhenItsFieldsMayNotBeSent() {
        let heads = HeadEncodingBuffer()
        var cases: [HTTPHeaders] = [["": "v"], ["x-ok": "obs-text \u{E9} and\ttab"]]
        for byte in UInt8(0)...UInt8(255) {
            let text = String(decoding: [byte], as: UTF8.self)
            cases.append(["x\(text)y": "v"])
            for position in [0, 5, 7, 8, 15, 16, 19] {
                var value = Array("0123456789abcdefghij".utf8)
                value[position] = byte
                cases.append(["x-value": String(decoding: value, as: UTF8.self)])
            }
        }
        var refused = 0
        for fields in cases {
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: fields)
            let encoded = heads.http1RequestHead(head)
            XCTAssertEqual(encoded != nil, fields.areValidToSend, "\(fields)")
            XCTAssertEqual(ByteBufferAllocator().http1RequestHead(head) != nil, fields.areValidToSend, "\(fields)")
            if encoded == nil { refused += 1 }
        }
        XCTAssertGreaterThan(refused, 200, "control bytes, DEL and non-token name bytes are refused")
        XCTAssertEqual(heads.http1RequestHead(self.request).map { String(buffer: $0) }, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    }
}
