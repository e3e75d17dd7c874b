import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

/// What a decoder delivered, in order: request parts, head starts and HTTP/2 prefaces.
final class DecodedOutput: HTTPRequestDecoderOutput {
    var parts: [HTTPServerRequestPart] = []
    var headsStarted = 0
    var prefaces = 0

    func requestHeadStarted() { self.headsStarted += 1 }
    func receivedHTTP2Preface() { self.prefaces += 1 }
    func received(_ part: HTTPServerRequestPart) { self.parts.append(part) }
}

/// Feeds `input` to `decoder` as a connection handler does (bytes not yet decoded are kept and the next
/// read appended), either at once or byte by byte, and returns what it delivered.
func decodeAll(
    _ input: String,
    decoder: inout StrictHTTPRequestDecoder,
    byteByByte: Bool = false
) throws -> DecodedOutput {
    try decodeAll(input, decoder: &decoder, into: DecodedOutput(), byteByByte: byteByByte)
}

/// The same, into any output.
func decodeAll<Output: HTTPRequestDecoderOutput>(
    _ input: String,
    decoder: inout StrictHTTPRequestDecoder,
    into output: Output,
    byteByByte: Bool = false
) throws -> Output {
    var unread = ByteBuffer()
    let bytes = Array(input.utf8)
    for read in byteByByte ? bytes.map({ [$0] }) : [bytes] {
        unread.writeBytes(read)
        while try decoder.decode(&unread, into: output) == .continue {}
    }
    return output
}

/// Feeds `input` to a fresh decoder, either at once or byte by byte, and returns the parts.
func decode(
    _ input: String,
    limits: StrictHTTPRequestDecoder.Limits = .init(),
    byteByByte: Bool = false
) throws -> [HTTPServerRequestPart] {
    var decoder = StrictHTTPRequestDecoder(limits: limits)
    return try decodeAll(input, decoder: &decoder, byteByByte: byteByByte).parts
}

/// Merges adjacent body parts, so byte-by-byte and whole decoding can be compared.
func coalesced(_ parts: [HTTPServerRequestPart]) -> [HTTPServerRequestPart] {
    var result: [HTTPServerRequestPart] = []
    for part in parts {
        if case .body(var next) = part, case .body(var previous)? = result.last {
            previous.writeBuffer(&next)
            result[result.count - 1] = .body(previous)
        } else {
            result.append(part)
        }
    }
    return result
}

func decodeError(_ input: String, limits: StrictHTTPRequestDecoder.Limits = .init()) -> HTTPEdgeError? {
    var errors: [HTTPEdgeError] = []
    for byteByByte in [false, true] {
        do {
            _ = try decode(input, limits: limits, byteByByte: byteByByte)
            return nil
        } catch let error as HTTPEdgeError {
            errors.append(error)
        } catch {
            return nil
        }
    }
    return errors.first == errors.last ? errors.first : nil
}

/// Everything written to the socket so far, as text.
func outboundText(_ channel: EmbeddedChannel) throws -> String {
    var text = ""
    while let data = try channel.readOutbound(as: IOData.self) {
        if case .byteBuffer(let buffer) = data {
            text += String(buffer: buffer)
        }
    }
    return text
}

/// Answers every complete request with "200 ok" (or holds responses when `autoRespond` is off). Called
/// directly by the connection handler when the pipeline attaches it (as the proxy is), through the pipeline
/// otherwise.
final class TestResponder: ChannelInboundHandler, DirectExchangeApplication {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    var autoRespond = true
    /// Answer as soon as the head arrives (an early response), instead of at the request's end.
    var respondAtHead = false
    var heads: [HTTPRequestHead] = []
    var ends = 0
    var errors: [Error] = []
    /// Parts that came by direct call, and through the pipeline.
    var directParts = 0
    var pipelineParts = 0
    private var context: ChannelHandlerContext?
    private(set) var connection: (any DirectExchangeTransport)?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.connection?.detachApplication()
        self.context = nil
    }

    func writesDirectly(to connection: (any DirectExchangeTransport)?) { self.connection = connection }

    func requestPartArrived(_ part: HTTPServerRequestPart) {
        self.directParts += 1
        self.received(part)
    }

    /// Whether heads may come with their fields as lines; how many did (their fields are recorded in `heads`).
    var takesRequestFieldLines = false
    var headsWithLines = 0

    func requestHeadArrived(_ head: HTTPRequestHead, summary: HTTP1HeadSummary, fieldLines: HTTP1FieldLines) {
        XCTAssertTrue(head.headers.isEmpty, "a head with lines has no fields of its own")
        self.headsWithLines += 1
        self.requestPartArrived(.head(head.withFields(of: fieldLines)))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.pipelineParts += 1
        self.received(self.unwrapInboundIn(data))
    }

    private func received(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            self.heads.append(head)
            if self.respondAtHead { self.respond() }
        case .body: break
        case .end:
            self.ends += 1
            if self.autoRespond && !self.respondAtHead { self.respond() }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.errors.append(error)
    }

    func respond(body: String = "ok") {
        guard let context else { return }
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: String(body.utf8.count))
        self.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)), context: context)
        self.write(.body(.byteBuffer(ByteBuffer(string: body))), context: context)
        self.write(.end(nil), context: context)
        if let connection { connection.flush() } else { context.flush() }
    }

    private func write(_ part: HTTPServerResponsePart, context: ChannelHandlerContext) {
        if let connection {
            connection.write(part, promise: nil)
        } else {
            context.write(Self.wrapOutboundOut(part), promise: nil)
        }
    }
}

func makeEdgeChannel(
    responder: TestResponder,
    limits: StrictHTTPRequestDecoder.Limits = .init(),
    headerTimeout: TimeAmount = .seconds(10),
    idleTimeout: TimeAmount = .seconds(15),
    direct: Bool = true
) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    try channel.pipeline.syncOperations.configureEdgeHTTPPipeline(
        options: EdgePipelineOptions(limits: limits, headerTimeout: headerTimeout, idleTimeout: { idleTimeout }),
        application: responder
    )
    if !direct {
        try channel.pipeline.syncOperations.handler(type: HTTP1ConnectionHandler.self).detachApplication()
    }
    return channel
}
