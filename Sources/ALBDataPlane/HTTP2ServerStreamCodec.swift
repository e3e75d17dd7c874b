import NIOCore
import NIOHTTP1
import NIOHTTP2

/// An HTTP/2 stream's HTTP/1 codec on the server side: nio-http2's `HTTP2FramePayloadToHTTP1ServerCodec`,
/// except that a response's end rides on its last DATA frame instead of following it in an empty one.
///
/// nio-http2's codec turns a response body part into a DATA frame and the end into another, empty DATA
/// frame with `END_STREAM`: three frames for a response of one body part, each one a trip through the
/// stream channel, the connection state machine, the flow-control buffer and the frame encoder. Here a
/// body part is held until whatever is written next: the end (no trailers) goes out with it as one DATA
/// frame carrying `END_STREAM`, as nginx and HAProxy answer; anything else, or a flush, sends it on as
/// before. A held part therefore never outlives the flush that would have sent it.
///
/// The request side, the response head and trailers are nio-http2's codec itself (its validation of
/// pseudo-header fields, `Host` from `:authority` and so on), called with this handler's context: it keeps
/// no context and no per-stream outbound state, so it writes exactly what it would write in the pipeline.
final class HTTP2ServerStreamCodec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let codec = HTTP2FramePayloadToHTTP1ServerCodec()
    /// The last body part written and not yet sent, with its write's promise.
    private var heldBody: (data: IOData, promise: EventLoopPromise<Void>?)?

    init() {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.codec.channelRead(context: context, data: data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = Self.unwrapOutboundIn(data)
        switch part {
        case .body(let body):
            self.sendHeldBody(context: context)
            self.heldBody = (body, promise)
        case .end(nil):
            guard let held = self.heldBody else {
                self.codec.write(context: context, data: data, promise: promise)
                return
            }
            self.heldBody = nil
            let last = HTTP2Frame.FramePayload.data(.init(data: held.data, endStream: true))
            context.write(Self.wrapOutbound(last), promise: Self.combined(held.promise, promise))
        case .head, .end:
            self.sendHeldBody(context: context)
            self.codec.write(context: context, data: data, promise: promise)
        }
    }

    func flush(context: ChannelHandlerContext) {
        self.sendHeldBody(context: context)
        context.flush()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // As an unflushed write is failed when its channel closes.
        self.failHeldBody()
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.failHeldBody()
    }

    private func sendHeldBody(context: ChannelHandlerContext) {
        guard let held = self.heldBody else { return }
        self.heldBody = nil
        context.write(Self.wrapOutbound(.data(.init(data: held.data))), promise: held.promise)
    }

    private func failHeldBody() {
        guard let held = self.heldBody else { return }
        self.heldBody = nil
        held.promise?.fail(ChannelError.ioOnClosedChannel)
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
