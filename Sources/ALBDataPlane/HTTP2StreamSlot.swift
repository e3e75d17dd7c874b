import Atomics
import NIOCore
import NIOHTTP2

/// A pipeline that serves an HTTP/2 connection's streams one after another, as an HTTP/1 connection's pipeline
/// serves its requests: the `Channel` the stream handlers (``HTTP2ServerStreamCodec``, the compressor,
/// ``ProxyHandler``) sit in, in place of nio-http2's channel per stream. ``HTTP2StreamRouter`` binds it to a
/// stream when one opens and takes it back when the stream closes cleanly.
///
/// Why: nio-http2's multiplexer builds a channel, a pipeline and its handlers for every stream, activates it,
/// runs the initializer through a future, and takes it all down when the stream closes. Measured on a bare
/// nio-http2 server answering 1 KiB over TLS (docs/benchmarks.md), a channel per stream cost about 13 µs of CPU
/// per request against frames handled in the connection's pipeline; alb spent that on every HTTP/2 request.
///
/// What it does for its stream:
/// - reads: the stream's frames are held until the pipeline reads (`read0`), as a socket holds bytes, so the
///   proxy's backpressure (no read while the backend is not writable) works as on any channel; the
///   flow-control credit of DATA is given back (`WINDOW_UPDATE`) as it is delivered, so a paused stream stops
///   its client once the window is spent, and holds at most one window;
/// - writes: frames of its stream to the connection. Writable while the connection is and while the response
///   bytes not yet written to the socket stay under ``bufferedLimit``; the first ``bufferedLimit`` bytes of a
///   response are not counted (a small response costs no promise), later ones are counted until their write
///   completes;
/// - close: from the pipeline (the proxy gives up on a stream) resets the stream. A stream that ends otherwise
///   than cleanly (reset by the client, a stream error, the connection closing) gives the pipeline
///   `channelInactive`, and the slot is not used again.
///
/// On the connection's event loop only (its state is not locked; `isWritable` and `isActive` are atomics
/// because `Channel` promises them to any thread).
final class HTTP2StreamSlot: Channel, ChannelCore, @unchecked Sendable {
    let allocator: ByteBufferAllocator
    let eventLoop: EventLoop
    let parent: Channel?
    let localAddress: SocketAddress?
    let remoteAddress: SocketAddress?
    private var _pipeline: ChannelPipeline!
    private let closePromise: EventLoopPromise<Void>
    /// Cleared when the slot closes: a handler that writes late finds the slot closed, and no cycle outlives
    /// the connection.
    private var router: HTTP2StreamRouter?

    /// The stream served now; nil between streams.
    private(set) var streamID: HTTP2StreamID?
    /// Frames of the stream not yet read by the pipeline.
    private var unread = CircularBuffer<HTTP2Frame.FramePayload>(initialCapacity: 2)
    private var readRequested = false
    private var deliveredSinceReadComplete = false
    /// The router will end this slot's read when the connection's read ends (it has a frame of this read).
    var awaitsConnectionReadComplete = false
    /// DATA bytes delivered and not yet given back to the client as stream window (none once the client ended
    /// the stream: its last frame's bytes are not given back).
    private var creditToReturn = 0
    /// Request body bytes the stream's `content-length` still allows; nil when the request declared none.
    private var requestBytesAllowed: Int?
    private var uncountedResponseBytes = HTTP2StreamSlot.bufferedLimit
    private var bufferedResponseBytes = 0
    private var closed = false
    /// The response's last frame (`END_STREAM`) was written: a reset after it only stops the request's body.
    private var responseEnded = false
    /// Whether the pipeline compresses (built so): a slot is reused only while that still matches the listener.
    let compresses: Bool
    /// The pipeline's first handler, when it is the stream's codec attached by ``attachCodec(_:)``: frames reach it,
    /// and it writes them, by direct call instead of through the pipeline's head, which cost a cast out of `NIOAny`
    /// and a trip through the head each way, about 600 instructions a frame (callgrind).
    private var codec: HTTP2ServerStreamCodec?

    private let writable = ManagedAtomic(true)
    private let active = ManagedAtomic(true)

    /// Response bytes a stream may have on their way to the socket before it stops being writable: nio-http2's
    /// handler holds what the client's window does not admit yet.
    static let bufferedLimit = 65536
    /// Window given back in steps of at least this (half the default window, as nio-http2 does).
    static let windowUpdateStep = 32768

    init(parent: Channel, router: HTTP2StreamRouter, compresses: Bool) {
        self.allocator = parent.allocator
        self.eventLoop = parent.eventLoop
        self.parent = parent
        self.localAddress = parent.localAddress
        self.remoteAddress = parent.remoteAddress
        self.closePromise = parent.eventLoop.makePromise()
        self.router = router
        self.compresses = compresses
        self._pipeline = ChannelPipeline(channel: self)
    }

    var pipeline: ChannelPipeline { self._pipeline }
    var closeFuture: EventLoopFuture<Void> { self.closePromise.futureResult }
    var isWritable: Bool { self.writable.load(ordering: .relaxed) }
    var isActive: Bool { self.active.load(ordering: .relaxed) }
    var _channelCore: ChannelCore { self }

    /// `codec`, the first handler of the pipeline, takes the stream's frames and writes its own by direct call,
    /// until it leaves the pipeline. Nothing may be added in front of it meanwhile.
    func attachCodec(_ codec: HTTP2ServerStreamCodec) {
        self.codec = codec
        codec.writesDirectly(to: self)
    }

    func detachCodec() {
        guard let codec = self.codec else { return }
        self.codec = nil
        codec.writesDirectly(to: nil)
    }

    /// Whether the slot can take the next stream: its pipeline is open and serves none.
    var isReusable: Bool { !self.closed && self.streamID == nil }

    // MARK: - Driven by the router

    /// The pipeline is built: it becomes active and asks for its first read, as an accepted connection does.
    func activate() {
        self.pipeline.fireChannelRegistered()
        self.pipeline.fireChannelActive()
        self.pipeline.read()
    }

    /// The slot serves `streamID` from now on, a request declaring `contentLength` body bytes (nil: none declared).
    func open(_ streamID: HTTP2StreamID, contentLength: Int?) {
        self.streamID = streamID
        self.responseEnded = false
        self.requestBytesAllowed = contentLength
        self.creditToReturn = 0
        self.uncountedResponseBytes = Self.bufferedLimit
    }

    /// Counts `bytes` of request body (trailers: none) against the declared `content-length`: false when they go
    /// past it, or the stream ends short of it (RFC 9113 section 8.1.1: the request is malformed).
    func requestBodyArrived(_ bytes: Int, endStream: Bool) -> Bool {
        guard let allowed = self.requestBytesAllowed else { return true }
        guard bytes <= allowed else { return false }
        self.requestBytesAllowed = allowed - bytes
        return !endStream || bytes == allowed
    }

    /// A frame of the stream arrived: delivered now if the pipeline is reading, else when it reads.
    func receive(_ payload: HTTP2Frame.FramePayload) {
        if self.readRequested {
            self.deliver(payload)
        } else {
            self.unread.append(payload)
        }
    }

    /// The connection's read is over: the pipeline hears it if it read something, and reads on (auto-read).
    func connectionReadComplete() {
        guard self.deliveredSinceReadComplete, !self.closed else { return }
        self.deliveredSinceReadComplete = false
        self.readRequested = false
        self.pipeline.fireChannelReadComplete()
        if !self.closed { self.pipeline.read() }
    }

    /// The stream closed (nio-http2's `StreamClosedEvent`): cleanly (`reason` nil) the slot waits for the next
    /// stream; reset, the pipeline learns it is over. So does one that had not read the whole request (the
    /// response went out first and the proxy stopped reading): its handlers never saw the request end, and
    /// would take the next stream's head for this one's trailers.
    func streamClosed(reason: HTTP2ErrorCode?) {
        self.streamID = nil
        if reason != nil || !self.unread.isEmpty {
            self.close(error: ChannelError.eof)
        }
    }

    func connectionWritabilityChanged() {
        self.updateWritability()
    }

    func streamError(_ error: Error) {
        guard !self.closed else { return }
        self.pipeline.fireErrorCaught(error)
    }

    /// The connection is gone: so is the stream and the slot.
    func connectionClosed() {
        self.close(error: ChannelError.eof)
    }

    private func deliver(_ payload: HTTP2Frame.FramePayload) {
        self.deliveredSinceReadComplete = true
        if case .data(let data) = payload, !data.endStream {
            self.creditToReturn += data.data.readableBytes + (data.paddingBytes.map { $0 + 1 } ?? 0)
            if self.creditToReturn >= Self.windowUpdateStep, let streamID = self.streamID {
                self.router?.returnCredit(self.creditToReturn, on: streamID)
                self.creditToReturn = 0
            }
        }
        if let codec = self.codec {
            codec.frameArrived(payload)
        } else {
            self.pipeline.syncOperations.fireChannelRead(NIOAny(payload))
        }
    }

    private func updateWritability() {
        let writable = self.bufferedResponseBytes < Self.bufferedLimit && (self.parent?.isWritable ?? false)
        if writable != self.writable.load(ordering: .relaxed) {
            self.writable.store(writable, ordering: .relaxed)
            if !self.closed { self.pipeline.fireChannelWritabilityChanged() }
        }
    }

    /// Closes the slot once: the stream is reset if it is still open, the pipeline hears `channelInactive` and
    /// loses its handlers.
    private func close(error: Error) {
        guard !self.closed else { return }
        self.closed = true
        if let streamID = self.streamID {
            self.streamID = nil
            // After a complete response, NO_ERROR asks the client to stop sending the request (RFC 9113 section
            // 8.1); before it, the response failed on this side (a backend that closed or went silent mid-response):
            // INTERNAL_ERROR, as nginx sends. CANCEL would tell the client it had cancelled (gRPC: CANCELLED).
            self.router?.reset(streamID, code: self.responseEnded ? .noError : .internalError)
        }
        self.router?.slotClosed(self)
        self.router = nil
        self.unread.removeAll()
        self.active.store(false, ordering: .relaxed)
        self.writable.store(false, ordering: .relaxed)
        self.pipeline.fireChannelInactive()
        self.pipeline.fireChannelUnregistered()
        self.eventLoop.assumeIsolated().execute {
            self.removeHandlers(pipeline: self.pipeline)
            self.closePromise.succeed()
        }
    }

    // MARK: - ChannelCore

    func localAddress0() throws -> SocketAddress {
        guard let address = self.localAddress else { throw ChannelError.operationUnsupported }
        return address
    }

    func remoteAddress0() throws -> SocketAddress {
        guard let address = self.remoteAddress else { throw ChannelError.operationUnsupported }
        return address
    }

    func register0(promise: EventLoopPromise<Void>?) {
        promise?.succeed()
    }

    func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) {
        promise?.succeed()
    }

    func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.writeFrame(self.unwrapData(data, as: HTTP2Frame.FramePayload.self), promise: promise)
    }

    /// A frame of the stream to the connection: from the pipeline's head, or from the attached codec. (Not an
    /// overload of `Channel.write`, which goes through the pipeline.)
    func writeFrame(_ payload: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>?) {
        guard let streamID = self.streamID, let router = self.router else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard case .data(let data) = payload else {
            if case .headers(let headers) = payload, headers.endStream { self.responseEnded = true }
            router.write(HTTP2Frame(streamID: streamID, payload: payload), promise: promise)
            return
        }
        if data.endStream { self.responseEnded = true }
        let bytes = data.data.readableBytes
        if bytes <= self.uncountedResponseBytes {
            self.uncountedResponseBytes -= bytes
            router.write(HTTP2Frame(streamID: streamID, payload: payload), promise: promise)
            return
        }
        self.uncountedResponseBytes = 0
        self.bufferedResponseBytes += bytes
        let counted = promise ?? self.eventLoop.makePromise()
        counted.futureResult.assumeIsolated().whenComplete { _ in
            self.bufferedResponseBytes -= bytes
            self.updateWritability()
        }
        router.write(HTTP2Frame(streamID: streamID, payload: payload), promise: counted)
        self.updateWritability()
    }

    func flush0() {
        self.router?.flush()
    }

    func read0() {
        guard !self.closed else { return }
        self.readRequested = true
        guard !self.unread.isEmpty else { return }
        while !self.closed, let payload = self.unread.popFirst() {
            self.deliver(payload)
        }
        // Frames held from an earlier read, delivered outside the connection's read: their read ends now (the
        // proxy flushes what it wrote to the backend at the end of a read).
        if !self.awaitsConnectionReadComplete {
            self.connectionReadComplete()
        }
    }

    func close0(error: Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard !self.closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        self.close(error: error)
        promise?.succeed()
    }

    func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    func channelRead0(_ data: NIOAny) {}

    func errorCaught0(error: Error) {}

    // MARK: - Options (none are used by the stream handlers; auto-read is always on)

    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        self.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
    }

    func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if option is ChannelOptions.Types.AutoReadOption, let value = true as? Option.Value {
            return self.eventLoop.makeSucceededFuture(value)
        }
        return self.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
    }
}
