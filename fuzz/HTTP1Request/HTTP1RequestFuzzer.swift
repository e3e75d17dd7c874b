import ALBHTTP
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// One fuzz input: the bytes as what a client sends on one connection, fed to the edge pipeline in
/// one or several reads, with the clock advanced between reads (so the header and idle timeouts and
/// the lingering close fire), a responder that answers at the request's end, later, or early, and
/// sometimes a graceful quiesce. The check: no crash, and in the bytes written never more final responses
/// than requests, nor a response after one that said `Connection: close`.
///
/// The split points and choices come from a hash of the input, so the corpus stays plain HTTP and a
/// crasher replays exactly.
func checkHTTP1Request(_ bytes: UnsafeRawBufferPointer) {
    var choices = InputDerivedChoices(bytes)
    let limits = choices.pick([
        StrictHTTPRequestDecoder.Limits(),
        StrictHTTPRequestDecoder.Limits(maxHeaderBytes: 256, maxHeaderCount: 4, maxChunkLineBytes: 16),
    ])
    let responder = FuzzResponder(mode: choices.pick([.atEnd, .atEnd, .later, .early]))
    let recorder = RequestsStarted(limits: limits)
    var written = ResponseBytesChecker()
    let channel = EmbeddedChannel()
    do {
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let pipeline = channel.pipeline.syncOperations
        try pipeline.configureEdgeHTTPPipeline(
            options: EdgePipelineOptions(limits: limits, headerTimeout: .seconds(10), idleTimeout: { .seconds(15) }),
            application: responder
        )
    } catch {
        fatalError("cannot set up the edge pipeline: \(error)")
    }

    let reads = choices.split(bytes, into: 1 + choices.below(8))
    let quiesceBeforeRead = choices.below(4) == 0 ? choices.below(reads.count + 1) : nil
    for (index, read) in reads.enumerated() {
        if index == quiesceBeforeRead {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        guard channel.isActive else { break }
        // Errors reaching the end of the pipeline are the edge's to answer; the check is what it wrote.
        recorder.decode(read)
        _ = try? channel.writeInbound(ByteBuffer(bytes: read))
        channel.embeddedEventLoop.advanceTime(by: choices.pick([.zero, .zero, .milliseconds(1), .seconds(3), .seconds(11)]))
        responder.answerHeldRequest()
        written.check(drainOutbound(channel), requestsStarted: recorder.requestsStarted)
    }
    // Past every timeout and the lingering close.
    channel.embeddedEventLoop.advanceTime(by: .seconds(20))
    responder.answerHeldRequest()
    written.check(drainOutbound(channel), requestsStarted: recorder.requestsStarted)
    // Accepting an already closed channel still runs what its close queued (removing the handlers, which
    // breaks the channel-pipeline-context cycle) and cancels timers not due yet, so LeakSanitizer reports
    // only references the edge handlers themselves keep alive.
    _ = try? channel.finish(acceptAlreadyClosed: true)
}

/// A broken invariant is a finding: trap with the reason (a `precondition` message is dropped in -O builds).
private func require(_ condition: Bool, _ reason: @autoclosure () -> String) {
    if !condition { fatalError("edge pipeline invariant: \(reason())") }
}

/// The bytes written since the last call.
private func drainOutbound(_ channel: EmbeddedChannel) -> [UInt8] {
    var bytes: [UInt8] = []
    while let data = try? channel.readOutbound(as: IOData.self) {
        if case .byteBuffer(let buffer) = data { bytes += buffer.readableBytesView }
    }
    return bytes
}

/// Counts the requests a client started, from a decoder of its own fed the same reads as the edge (the
/// edge's decoder is inside its connection handler): a request counts from its first byte, or from a decode
/// error outside any request, such as a bare CR before a request line. It may count more than the edge
/// decoded (the edge stops at a close), never fewer, so the check it bounds stays sound.
final class RequestsStarted: HTTPRequestDecoderOutput {
    private(set) var requestsStarted = 0
    private var requestOpen = false
    private var decoder: StrictHTTPRequestDecoder
    private var unread = ByteBuffer()
    private var stopped = false

    init(limits: StrictHTTPRequestDecoder.Limits) {
        self.decoder = StrictHTTPRequestDecoder(limits: limits)
    }

    func decode(_ bytes: some Sequence<UInt8>) {
        guard !self.stopped else { return }
        self.unread.writeBytes(bytes)
        do {
            while try self.decoder.decode(&self.unread, into: self) == .continue {}
        } catch {
            self.stopped = true
            if !self.requestOpen {
                // Refused before it could start: still a request the client may get one answer to.
                self.requestsStarted += 1
            }
        }
        if self.decoder.hasHandedOff { self.stopped = true }
    }

    func requestHeadStarted() {
        self.requestsStarted += 1
        self.requestOpen = true
    }

    func receivedHTTP2Preface() {}

    func received(_ part: HTTPServerRequestPart) {
        if case .end = part { self.requestOpen = false }
    }
}

/// Reads what the edge wrote as a sequence of HTTP/1 responses (every one here is length-delimited: the
/// responder's and the edge's own) and checks it against the requests started.
struct ResponseBytesChecker {
    private var unread: [UInt8] = []
    private var bodyLeft = 0
    private var finalResponses = 0
    private var closeAnnounced = false

    mutating func check(_ bytes: [UInt8], requestsStarted: Int) {
        self.unread += bytes
        while true {
            let body = min(self.bodyLeft, self.unread.count)
            self.unread.removeFirst(body)
            self.bodyLeft -= body
            guard self.bodyLeft == 0, let end = Self.headEnd(self.unread) else { return }
            let head = String(decoding: self.unread[..<end], as: UTF8.self)
            self.unread.removeFirst(end + 4)
            let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
            let statusLine = lines.first.map { $0.split(separator: " ", maxSplits: 2) } ?? []
            require(statusLine.count >= 2 && statusLine[0].hasPrefix("HTTP/1."), "not a response head: \(head)")
            require(!self.closeAnnounced, "a response after one that said Connection: close")
            let code = Int(statusLine[1]) ?? 0
            require((100...599).contains(code), "status \(statusLine[1])")
            if code >= 200 {
                self.finalResponses += 1
                require(self.finalResponses <= requestsStarted,
                        "\(self.finalResponses) final responses to \(requestsStarted) requests")
            }
            for line in lines.dropFirst() {
                let field = line.split(separator: ":", maxSplits: 1)
                guard field.count == 2 else { continue }
                let value = field[1].drop(while: { $0 == " " }).lowercased()
                switch field[0].lowercased() {
                case "content-length": self.bodyLeft = Int(value) ?? 0
                case "connection" where value == "close": self.closeAnnounced = true
                default: break
                }
            }
        }
    }

    /// Where the first head's empty line starts.
    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }
}

/// The application end of the pipeline, standing in for the proxy: answers each request with a short
/// 200, at its end, at the next step (so pipelined requests queue up), or as soon as its head arrives
/// (an early response while the body is still coming). Like the proxy, it abandons the exchange when
/// the edge reports an error for it.
final class FuzzResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    enum Mode { case atEnd, later, early }

    private let mode: Mode
    private var context: ChannelHandlerContext?
    private var held = false

    init(mode: Mode) {
        self.mode = mode
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (Self.unwrapInboundIn(data), self.mode) {
        case (.head, .early), (.end, .atEnd):
            self.respond(context: context)
        case (.end, .later):
            self.held = true
        case (.head, _), (.body, _), (.end, .early):
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        self.held = false
    }

    func answerHeldRequest() {
        guard self.held, let context = self.context else { return }
        self.held = false
        self.respond(context: context)
    }

    private func respond(context: ChannelHandlerContext) {
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "2"])
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// SplitMix64 seeded with the input's FNV-1a hash.
struct InputDerivedChoices {
    private var state: UInt64

    init(_ bytes: UnsafeRawBufferPointer) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        self.state = hash
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9e37_79b9_7f4a_7c15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// A number in 0..<bound (bound > 0).
    mutating func below(_ bound: Int) -> Int {
        Int(self.next() % UInt64(bound))
    }

    mutating func pick<Element>(_ options: [Element]) -> Element {
        options[self.below(options.count)]
    }

    /// The bytes cut into at most `parts` consecutive, non-empty pieces (one empty piece for no bytes).
    mutating func split(_ bytes: UnsafeRawBufferPointer, into parts: Int) -> [ArraySlice<UInt8>] {
        let all = Array(bytes)
        guard all.count > 1, parts > 1 else { return [all[...]] }
        var cuts = Set<Int>()
        for _ in 1..<parts {
            cuts.insert(1 + self.below(all.count - 1))
        }
        var pieces: [ArraySlice<UInt8>] = []
        var start = 0
        for cut in cuts.sorted() {
            pieces.append(all[start..<cut])
            start = cut
        }
        pieces.append(all[start...])
        return pieces
    }
}

#if ALB_LIBFUZZER
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    checkHTTP1Request(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
#else
import FuzzReplay

@main
enum HTTP1RequestReplay {
    static func main() { replayInputs(checkHTTP1Request) }
}
#endif
