import ALBHTTP
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// An HTTP/2 stream's HTTP/1 codec on the server side: what nio-http2's `HTTP2FramePayloadToHTTP1ServerCodec`
/// does, with the heads converted in one pass each (``HTTP2Heads``) and a response's end riding on its last
/// DATA frame.
///
/// The heads: nio-http2's codec took seven passes over a request's block (four pseudo-header look-ups, two
/// `contains`, the copy) and three over a response head (an intermediate `HTTPHeaders` with `:status`, a
/// `lowercased()` per name, a scan for the names `Connection` lists and five name comparisons per field). The
/// checks are the same: ``HTTP2StreamRouter`` validates a block before it gets here (``HTTP2InboundBlock``:
/// pseudo-header order and set, lowercase names, field values, connection-specific fields), and ``HTTP2Heads``
/// refuses, with nio's errors, what nio's codec refuses on top of that.
///
/// The end of a response: nio-http2's codec turns a body part into a DATA frame and the end into another, empty
/// DATA frame with `END_STREAM`: three frames for a response of one body part, each one a trip through the
/// stream channel, the connection state machine, the flow-control buffer and the frame encoder. Here a body
/// part is held until whatever is written next: the end (no trailers) goes out with it as one DATA frame
/// carrying `END_STREAM`, as nginx and HAProxy answer; anything else, or a flush, sends it on as before. A held
/// part therefore never outlives the flush that would have sent it.
///
/// The proxy right after it, with no compressor between, is called directly both ways (``attachDirectly(_:)``,
/// ``DirectExchangeTransport``), as an HTTP/1 connection's handler calls it. So is the stream's slot in front of
/// it (``HTTP2StreamSlot/attachCodec(_:)``): frames arrive by ``frameArrived(_:)`` and leave by
/// ``HTTP2StreamSlot/writeFrame(_:promise:)``, not through the pipeline's head.
final class HTTP2ServerStreamCodec: ChannelDuplexHandler, RemovableChannelHandler, DirectExchangeTransport {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTP2Frame.FramePayload

    /// The request head has arrived and the request has not ended: a HEADERS frame now carries trailers. Cleared
    /// at the request's end, as the stream's pipeline serves the connection's next stream after it
    /// (``HTTP2StreamSlot``).
    private var headReceived = false
    /// The last body part written and not yet sent, with its write's promise.
    private var heldBody: (data: IOData, promise: EventLoopPromise<Void>?)?
    /// The handler right after this one when it takes request parts by direct call; nil: through the pipeline.
    private var application: DirectExchangeApplication?
    private var context: ChannelHandlerContext?
    /// The slot this codec is the first handler of, when attached: frames are written to it directly.
    private var slot: HTTP2StreamSlot?
    /// Where response blocks are assembled (the event loop's).
    private let blockScratch: HTTP2BlockScratch
    /// A gRPC "Trailers-Only" answer (an error, or a stream with no message) arrives from a gRPC backend as one
    /// HEADERS frame that carries the status and ends the stream; through the HTTP/1 parts it becomes a head (with
    /// the `content-length: 0` nio-http2's translation adds) and an empty end. Sent on as such, the client would
    /// read headers, then an empty DATA frame, and no status. So a head with a `grpc-status` is held until the
    /// next part: the end makes it one HEADERS frame that ends the stream again, the form the backend sent, so its
    /// other fields stay trailing metadata (an error's details); a body (no gRPC backend sends one after a
    /// status) sends it on with the status fields moved to the trailers (``heldGRPCStatus``).
    private var heldTrailersOnlyHead: (head: HTTPResponseHead, promise: EventLoopPromise<Void>?)?
    private var heldGRPCStatus: HTTPHeaders?

    init(blockScratch: HTTP2BlockScratch = HTTP2BlockScratch()) {
        self.blockScratch = blockScratch
    }

    /// Set by the slot (``HTTP2StreamSlot/attachCodec(_:)``): nil writes through the pipeline again.
    func writesDirectly(to slot: HTTP2StreamSlot?) {
        self.slot = slot
    }

    /// A frame from the attached slot.
    func frameArrived(_ payload: HTTP2Frame.FramePayload) {
        guard let context = self.context else { return }
        self.read(payload, context: context)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// From now on request parts go to `application`, the handler right after this one, by direct call, and it
    /// writes its response parts with ``write(_:promise:)`` and ``flush()``: until either leaves the pipeline.
    func attachDirectly(_ application: DirectExchangeApplication) {
        self.detachApplication()
        self.application = application
        application.writesDirectly(to: self)
    }

    func detachApplication() {
        guard let application = self.application else { return }
        self.application = nil
        application.writesDirectly(to: nil)
    }

    /// A request part on to the application: directly when attached.
    private func pass(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        if let application = self.application {
            application.requestPartArrived(part)
        } else {
            context.fireChannelRead(Self.wrapInbound(part))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.read(self.unwrapInboundIn(data), context: context)
    }

    private func read(_ payload: HTTP2Frame.FramePayload, context: ChannelHandlerContext) {
        switch payload {
        case .headers(let headers):
            if self.headReceived {
                self.headReceived = false
                self.pass(.end(HTTP2Heads.fields(of: headers.headers)), context: context)
                return
            }
            self.headReceived = !headers.endStream
            let head: HTTPRequestHead
            do {
                head = try HTTP2Heads.requestHead(from: headers.headers, endStream: headers.endStream)
            } catch {
                context.fireErrorCaught(error)
                return
            }
            self.pass(.head(head), context: context)
            if headers.endStream {
                self.pass(.end(nil), context: context)
            }
        case .data(let data):
            // nio-http2 reads the network into byte buffers; a file region never arrives.
            guard case .byteBuffer(let bytes) = data.data else { return }
            if bytes.readableBytes > 0 || !data.endStream {
                self.pass(.body(bytes), context: context)
            }
            if data.endStream {
                self.headReceived = false
                self.pass(.end(nil), context: context)
            }
        default:
            break  // nothing else reaches a stream's HTTP/1 side
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.write(self.unwrapOutboundIn(data), promise: promise, context: context)
    }

    /// A response part from the attached application.
    func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) {
        guard let context = self.context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        self.write(part, promise: promise, context: context)
    }

    /// A response head whose backend fields come as lines: its block is made from them directly
    /// (``HTTP2Heads/headerBlock(status:lines:followedBy:scratch:)``), unless one is a gRPC status.
    func write(head: HTTPResponseHead, fieldLines: HTTP1FieldLines, promise: EventLoopPromise<Void>?) {
        guard let context = self.context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard let block = HTTP2Heads.headerBlock(status: head.status, lines: fieldLines, followedBy: head.headers,
                                                 scratch: self.blockScratch) else {
            var head = head
            head.headers = fieldLines.headers(followedBy: head.headers)
            self.write(.head(head), promise: promise, context: context)
            return
        }
        self.sendHeldBody(context: context)
        self.send(.headers(.init(headers: block)), promise: promise, context: context)
    }

    /// A flush from the attached application.
    func flush() {
        guard let context = self.context else { return }
        self.flush(context: context)
    }

    private func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            self.sendHeldBody(context: context)
            if head.headers.contains(lowercased: "grpc-status") {
                self.heldTrailersOnlyHead = (head, promise)
                return
            }
            let block = HTTP2Heads.headerBlock(status: head.status, fields: head.headers, scratch: self.blockScratch)
            self.send(.headers(.init(headers: block)), promise: promise, context: context)
        case .body(let body):
            if self.heldTrailersOnlyHead != nil { self.sendHeldHead(context: context) }
            self.sendHeldBody(context: context)
            self.heldBody = (body, promise)
        case .end(nil) where self.heldTrailersOnlyHead != nil:
            guard let (head, headPromise) = self.heldTrailersOnlyHead else { return }
            self.heldTrailersOnlyHead = nil
            var fields = head.headers
            fields.remove(name: "content-length")
            let block = HTTP2Heads.headerBlock(status: head.status, fields: fields, scratch: self.blockScratch)
            self.send(.headers(.init(headers: block, endStream: true)), promise: Self.combined(headPromise, promise),
                      context: context)
        case .end(nil) where self.heldGRPCStatus != nil:
            let status = self.heldGRPCStatus
            self.heldGRPCStatus = nil
            self.write(.end(status), promise: promise, context: context)
        case .end(nil):
            let last: HTTP2Frame.FramePayload.Data
            var promise = promise
            if let held = self.heldBody {
                self.heldBody = nil
                last = .init(data: held.data, endStream: true)
                promise = Self.combined(held.promise, promise)
            } else {
                last = .init(data: .byteBuffer(context.channel.allocator.buffer(capacity: 0)), endStream: true)
            }
            self.send(.data(last), promise: promise, context: context)
        case .end(let trailers?):
            self.sendHeldHead(context: context)
            self.heldGRPCStatus = nil
            self.sendHeldBody(context: context)
            let block = HTTP2Heads.trailerBlock(fields: trailers, scratch: self.blockScratch)
            self.send(.headers(.init(headers: block, endStream: true)), promise: promise, context: context)
        }
    }

    func flush(context: ChannelHandlerContext) {
        if self.heldTrailersOnlyHead != nil { self.sendHeldHead(context: context) }
        self.sendHeldBody(context: context)
        if let slot = self.slot {
            slot.flush0()
        } else {
            context.flush()
        }
    }

    private func send(_ payload: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if let slot = self.slot {
            slot.writeFrame(payload, promise: promise)
        } else {
            context.write(Self.wrapOutbound(payload), promise: promise)
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // As an unflushed write is failed when its channel closes.
        self.failHeldHead()
        self.failHeldBody()
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.slot?.detachCodec()
        self.detachApplication()
        self.context = nil
        self.failHeldHead()
        self.failHeldBody()
    }

    /// A held head with a gRPC status that the end did not follow: sent on, its status fields moved to the trailers.
    private func sendHeldHead(context: ChannelHandlerContext) {
        guard let held = self.heldTrailersOnlyHead else { return }
        self.heldTrailersOnlyHead = nil
        var head = held.head
        self.heldGRPCStatus = Self.takeGRPCStatus(from: &head.headers)
        let block = HTTP2Heads.headerBlock(status: head.status, fields: head.headers, scratch: self.blockScratch)
        self.send(.headers(.init(headers: block)), promise: held.promise, context: context)
    }

    private func failHeldHead() {
        guard let held = self.heldTrailersOnlyHead else { return }
        self.heldTrailersOnlyHead = nil
        held.promise?.fail(ChannelError.ioOnClosedChannel)
    }

    private func sendHeldBody(context: ChannelHandlerContext) {
        guard let held = self.heldBody else { return }
        self.heldBody = nil
        self.send(.data(.init(data: held.data)), promise: held.promise, context: context)
    }

    private func failHeldBody() {
        guard let held = self.heldBody else { return }
        self.heldBody = nil
        held.promise?.fail(ChannelError.ioOnClosedChannel)
    }

    private static func takeGRPCStatus(from headers: inout HTTPHeaders) -> HTTPHeaders? {
        guard headers.contains(lowercased: "grpc-status") else { return nil }
        var trailers = HTTPHeaders()
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            for value in headers[name] { trailers.add(name: name, value: value) }
            headers.remove(name: name)
        }
        return trailers
    }

    /// One promise for a write that carries two parts: nil when neither part's writer asked.
    private static func combined(_ first: EventLoopPromise<Void>?,
                                 _ second: EventLoopPromise<Void>?) -> EventLoopPromise<Void>? {
        guard let first else { return second }
        guard let second else { return first }
        second.futureResult.cascade(to: first)
        return second
    }
}

@available(*, unavailable)
extension HTTP2ServerStreamCodec: Sendable {}

/// The array a response's header block is assembled in, one per event loop and kept with its capacity, so that
/// a block costs one allocation (its own) and not two. Loop-confined; taken and given back within one call.
final class HTTP2BlockScratch {
    private var pairs: [(String, String)] = []
    /// The loop's texts of fields decoded lately, for blocks made from a backend's lines.
    let fieldTexts: FieldTextCache?

    init(fieldTexts: FieldTextCache? = nil) {
        self.fieldTexts = fieldTexts
    }

    /// `body` with the array, empty; taken back emptied, its capacity kept. Emptied one pair at a time from the
    /// end: `removeAll(keepingCapacity:)` destroys the pairs through the runtime's generic tuple witness, about 95
    /// instructions a pair (callgrind); this loop is specialised.
    @inline(__always)
    func withPairs<Result>(_ body: (inout [(String, String)]) -> Result) -> Result {
        var pairs: [(String, String)] = []
        swap(&pairs, &self.pairs)
        defer {
            while pairs.popLast() != nil {}
            swap(&pairs, &self.pairs)
        }
        return body(&pairs)
    }
}

@available(*, unavailable)
extension HTTP2BlockScratch: Sendable {}

/// The `cookie` fields of an HTTP/2 or HTTP/3 request on their way to an HTTP/1 head: one field, the values joined by
/// `"; "` where the first stood (RFC 9113 section 8.2.3, RFC 9114 section 4.2.1). A client may send one field per
/// cookie (the table compresses each on its own), and an HTTP/1.1 request carries one `Cookie` field (RFC 6265
/// section 5.4), which is what nginx and HAProxy send on.
struct CookieFields {
    /// Where the first `cookie` field is in the fields.
    private var firstAt: Int?

    /// Adds a `cookie` field's value to `fields`: the first as a field, a later one to it.
    mutating func add(_ value: String, to fields: inout [(String, String)]) {
        if let first = self.firstAt {
            fields[first].1.append("; ")
            fields[first].1.append(value)
        } else {
            self.firstAt = fields.count
            fields.append(("cookie", value))
        }
    }
}

/// HTTP/2 header blocks to and from the HTTP/1 heads the proxy works with, each in one pass over the fields.
enum HTTP2Heads {
    /// A request's head from its header block, as nio-http2's codec reads it: version 2.0; `Host` from
    /// `:authority` unless the block has one; for a method that may carry a body (not GET, HEAD, DELETE, CONNECT
    /// or TRACE) without `content-length`, `content-length: 0` if the stream ends with the head, else
    /// `transfer-encoding: chunked`, so the HTTP/1 side knows the framing; `cookie` fields joined into one
    /// (``CookieFields``). Throws nio-http2's errors for a missing, repeated or unsafe pseudo-header field.
    static func requestHead(from block: HPACKHeaders, endStream: Bool) throws -> HTTPRequestHead {
        var method: String?
        var path: String?
        var scheme: String?
        var authority: String?
        var hasHost = false
        var hasContentLength = false
        var cookies = CookieFields()
        var fields: [(String, String)] = []
        // Room for the two fields that may go in front: an HTTP/2 request names its host in `:authority`.
        fields.reserveCapacity(block.count + 2)
        let inline = SmallASCIIText.layoutMatches
        for (name, value, _) in block {
            // Told apart on the words of their inline form, when they have one (``InlineFieldName``).
            let words = inline ? InlineFieldName(name) : nil
            guard words?.startsWithColon ?? (name.utf8.first == UInt8(ascii: ":")) else {
                var isCookie = false
                if let words {
                    if words == .host {
                        hasHost = true
                    } else if words == .contentLength {
                        hasContentLength = true
                    } else if words == .cookie {
                        isCookie = true
                    }
                } else {
                    switch name.utf8.count {
                    case 4 where name == "host": hasHost = true
                    case 6 where name == "cookie": isCookie = true
                    case 14 where name == "content-length": hasContentLength = true
                    default: break
                    }
                }
                if isCookie {
                    cookies.add(value, to: &fields)
                } else {
                    fields.append((name, value))
                }
                continue
            }
            switch PseudoHeaderName(name, words: words) {
            case .method?: try Self.set(&method, name: name, to: value)
            case .path?: try Self.set(&path, name: name, to: value)
            case .scheme?: try Self.set(&scheme, name: name, to: value)
            case .authority?: try Self.set(&authority, name: name, to: value)
            default: break  // `:protocol` (extended CONNECT) is not read here
            }
        }
        let methodName = try Self.checked(method, name: ":method")
        let target = try Self.checked(path, name: ":path")
        _ = try Self.checked(scheme, name: ":scheme")
        let host = try Self.checked(authority, name: ":authority")
        let httpMethod = HTTPMethod(rawValue: methodName)
        var added: (String, String)?
        switch httpMethod {
        case .GET, .HEAD, .DELETE, .CONNECT, .TRACE:
            break
        default:
            if !hasContentLength {
                added = endStream ? ("content-length", "0") : ("transfer-encoding", "chunked")
            }
        }
        // In front, where nio-http2's codec puts them, within the room reserved: no second array.
        if let added { fields.insert(added, at: 0) }
        if !hasHost { fields.insert(("host", host), at: 0) }
        return HTTPRequestHead(version: HTTPVersion(major: 2, minor: 0), method: httpMethod, uri: target,
                               headers: HTTPHeaders(fields))
    }

    /// The regular fields of a block (trailers).
    static func fields(of block: HPACKHeaders) -> HTTPHeaders {
        var fields: [(String, String)] = []
        fields.reserveCapacity(block.count)
        for (name, value, _) in block where name.utf8.first != UInt8(ascii: ":") {
            fields.append((name, value))
        }
        return HTTPHeaders(fields)
    }

    /// A response head's block: `:status` first, then the fields with lowercase names (RFC 9113 section 8.2.1),
    /// without the connection-specific ones (section 8.2.2: the hop-by-hop fields and those `Connection` names,
    /// taken out by ``ProxyHeaders/removeHopByHop(from:)``). The proxy's response heads have none of those
    /// already (``ProxyHeaders/clientResponseHead(from:requestMethod:requestVersion:keepAlive:framing:)``), so
    /// that is a guard, not the usual path: the block is built in the same pass that looks for them, and built
    /// again only if one turns up.
    static func headerBlock(status: HTTPResponseStatus, fields: HTTPHeaders,
                            scratch: HTTP2BlockScratch = HTTP2BlockScratch()) -> HPACKHeaders {
        Self.block(status: Self.statusText(status), fields: fields, scratch: scratch)
    }

    /// A response head's block from its backend's field lines (without their hop-by-hop ones:
    /// ``HTTP1HeadSummary/hopByHopLeftOut``) followed by `fields` (the proxy's own): ``headerBlock(status:fields:scratch:)``
    /// without the `HTTPHeaders` the lines would have been made into, their array and its destruction. Nil when a
    /// line is a `grpc-status`, which a block of fields moves to the trailers (``HTTP2ServerStreamCodec``).
    static func headerBlock(status: HTTPResponseStatus, lines: HTTP1FieldLines, followedBy fields: HTTPHeaders,
                            scratch: HTTP2BlockScratch) -> HPACKHeaders? {
        scratch.withPairs { pairs in
            pairs.append((":status", Self.statusText(status)))
            guard lines.appendLowercasedFields(to: &pairs, texts: scratch.fieldTexts, stoppingAt: "grpc-status") else {
                return nil
            }
            for (name, value) in fields where !ProxyHeaders.isHopByHop(name) {
                pairs.append((Self.lowercased(name), value))
            }
            return HPACKHeaders(pairs)
        }
    }

    private static func statusText(_ status: HTTPResponseStatus) -> String {
        let code = Int(status.code)
        return code == 200 ? "200" : String(code)
    }

    /// Trailers' block: the fields, as in a head.
    static func trailerBlock(fields: HTTPHeaders, scratch: HTTP2BlockScratch = HTTP2BlockScratch()) -> HPACKHeaders {
        Self.block(status: nil, fields: fields, scratch: scratch)
    }

    private static func block(status: String?, fields: HTTPHeaders, scratch: HTTP2BlockScratch) -> HPACKHeaders {
        if let block = Self.block(status: status, fields: fields, stoppingAtHopByHop: true, scratch: scratch) {
            return block
        }
        var crossing = fields
        ProxyHeaders.removeHopByHop(from: &crossing)
        return Self.block(status: status, fields: crossing, stoppingAtHopByHop: false, scratch: scratch) ?? HPACKHeaders()
    }

    /// The block; nil as soon as a field turns out to be hop-by-hop when `stoppingAtHopByHop` (never otherwise).
    /// Made from an array of the pairs: `HPACKHeaders.add` checks that each name is ASCII by iterating its UTF-8
    /// view (about 100 instructions a name, callgrind), which the array's initialiser does not, and these names are
    /// tokens from the strict decoder or the proxy's own. The pairs go into `scratch`'s array, kept with its
    /// capacity, so the block's own array is the only one allocated.
    private static func block(status: String?, fields: HTTPHeaders, stoppingAtHopByHop: Bool,
                              scratch: HTTP2BlockScratch) -> HPACKHeaders? {
        scratch.withPairs { pairs in
            pairs.reserveCapacity(fields.count + 1)
            if let status {
                pairs.append((":status", status))
            }
            for (name, value) in fields {
                if stoppingAtHopByHop && ProxyHeaders.isHopByHop(name) { return nil }
                pairs.append((Self.lowercased(name), value))
            }
            return HPACKHeaders(pairs)
        }
    }

    /// `name` in lowercase. A field name is a token, ASCII only: a short one (nearly all) is lowered inside the
    /// string's own words, a longer one where its bytes are copied, and one that is already lowercase (the names
    /// the proxy sets) is not copied. `String.lowercased()`, which handles all of Unicode, cost about 180
    /// instructions a name (callgrind), a backend's `Content-Type` and its like; the copy about 160; lowering in
    /// place about 15.
    private static func lowercased(_ name: String) -> String {
        if let small = SmallASCIIText.lowercased(name) { return small }
        // One look at the bytes: nil inside when they hold no capital.
        let lowered = name.utf8.withContiguousStorageIfAvailable { bytes -> String? in
            guard bytes.contains(where: { $0 &- UInt8(ascii: "A") < 26 }) else { return nil }
            return String(unsafeUninitializedCapacity: bytes.count) { target in
                for index in 0..<bytes.count {
                    let byte = bytes[index]
                    target[index] = byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
                }
                return bytes.count
            }
        }
        guard let lowered else { return name.lowercased() }
        return lowered ?? name
    }

    private static func set(_ slot: inout String?, name: String, to value: String) throws {
        guard slot == nil else { throw NIOHTTP2Errors.duplicatePseudoHeader(name) }
        slot = value
    }

    /// The field's value if it is there and holds no space, control byte or DEL: nio-http2's codec refuses those
    /// (`:path` becomes the HTTP/1.1 request target, where such a byte would split or smuggle a request).
    private static func checked(_ value: String?, name: String) throws -> String {
        guard let value else { throw NIOHTTP2Errors.missingPseudoHeader(name) }
        guard value.utf8AllSatisfy({ $0 > 0x20 && $0 != 0x7F }) else {
            throw NIOHTTP2Errors.invalidPseudoHeaderValue(name: name, value: value)
        }
        return value
    }
}
