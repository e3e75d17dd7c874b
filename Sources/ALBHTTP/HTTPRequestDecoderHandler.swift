import NIOCore
import NIOHTTP1

/// Runs a ``StrictHTTPRequestDecoder`` on a client connection's bytes: what NIO's `ByteToMessageHandler`
/// does for it, less what the edge does not use.
///
/// Why not `ByteToMessageHandler`: it keeps two ring buffers per connection (its input queue and a queue of
/// observed writes) and is generic over the decoder across a module boundary, so every read looks up its
/// specialisation's metadata at run time. This handler keeps the bytes not decoded yet in one optional
/// buffer, which is nil between requests, and is not generic.
///
/// - Bytes that do not finish a line stay until the next read.
/// - After the decoder refuses the input (an ``HTTPEdgeError``, passed on as an error), whatever the client
///   still sends is dropped: the connection is answering and closing lingering, which reads until the
///   client closes.
/// - A request cut short by the end of the input is abandoned: the connection is going away.
/// - Removed after a hand-off (an h2c preface, a WebSocket upgrade the backend accepted), it passes the bytes
///   it holds, unparsed, to the handler that replaced it, as `ByteToMessageHandler` does; the removal runs on
///   the next event-loop turn, because it is usually asked for from inside a decode.
public final class HTTPRequestDecoderHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = HTTPServerRequestPart

    private var decoder: StrictHTTPRequestDecoder
    private var unread = PendingInput()
    /// A decode is running: a read arriving meanwhile (re-entrantly) only queues its bytes.
    private var decoding = false
    /// The decoder refused the input; nothing more is decoded.
    private var refused = false
    private var removing = false

    public init(_ decoder: StrictHTTPRequestDecoder) {
        self.decoder = decoder
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.refused { return }
        self.unread.append(Self.unwrapInboundIn(data))
        self.decodeUnread(context: context)
    }

    public func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        self.removing = true
        context.eventLoop.assumeIsolated().execute {
            self.handOff(context: context)
            context.leavePipeline(removalToken: removalToken)
        }
    }

    private func decodeUnread(context: ChannelHandlerContext) {
        guard !self.decoding else { return }
        self.decoding = true
        defer { self.decoding = false }
        while !self.removing && !self.refused, var buffer = self.unread.take() {
            let state: DecodingState
            do {
                state = try self.decoder.decode(context: context, buffer: &buffer)
            } catch {
                self.refused = true
                self.unread.removeAll()
                context.fireErrorCaught(error)
                return
            }
            let arrivedMeanwhile = self.unread.putBack(&buffer)
            if state == .needMoreData && !arrivedMeanwhile { return }
        }
    }

    /// The decoder's last word before leaving the pipeline: after a hand-off it passes the bytes on.
    private func handOff(context: ChannelHandlerContext) {
        guard !self.refused, var buffer = self.unread.take() else { return }
        do {
            while try self.decoder.decodeLast(context: context, buffer: &buffer, seenEOF: false) == .continue {}
        } catch {
            self.refused = true
            context.fireErrorCaught(error)
        }
    }
}

@available(*, unavailable)
extension HTTPRequestDecoderHandler: Sendable {}
