import NIOCore

/// Gathers the flushes one event-loop tick asks of a connection into one, made after the tick's I/O, and
/// the small writes before it into one buffer.
///
/// An HTTP/2 connection's streams are answered from different backend connections, each of which is read
/// in its own I/O event, and each answer flushes the client connection: ten streams answered in one tick
/// were ten TLS records and ten `write` calls, each one a trip through the kernel's loopback path (about a
/// third of the CPU of an HTTP/2 request in a profile). NIO runs tasks queued with `execute` after the
/// tick's I/O events, so the first flush of a tick queues one and the rest ride along: the answers of one
/// tick leave in one write. Nothing waits for a timer; a lone answer leaves in the same tick as before.
///
/// The HTTP/2 handler writes every frame as its own buffer (a DATA frame as two: its 9-byte header and its
/// payload), and the TLS handler seals each buffer it is given into a TLS record of its own: three records
/// per answer, each with its own encryption call, 22 bytes of overhead and an allocation in BoringSSL.
/// Writes smaller than ``gatherLimit`` are therefore copied into one buffer, sent with the flush (or when it
/// would outgrow a TLS record); larger ones go on as they are, after what was gathered before them, so a
/// big body is not copied.
///
/// A close arriving while a flush is deferred flushes first, so that what was written before it (a
/// GOAWAY, the last DATA frame) is not failed as a pending write of a closed channel.
public final class TickFlushCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    public typealias OutboundIn = IOData
    public typealias OutboundOut = IOData

    /// Writes below this size are gathered.
    public static let gatherLimit = 4096
    /// The most gathered before it is sent on: a TLS record's largest payload.
    public static let gatheredCapacity = 16384

    private var flushQueued = false
    /// Small writes not yet sent on, with the promise that completes when they are written (the first
    /// writer's; later writers' promises follow it).
    private var gathered: ByteBuffer?
    private var gatheredPromise: EventLoopPromise<Void>?

    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .byteBuffer(let bytes) = self.unwrapOutboundIn(data), bytes.readableBytes < Self.gatherLimit else {
            self.sendGathered(context: context)
            context.write(data, promise: promise)
            return
        }
        if var buffer = self.gathered, buffer.readableBytes + bytes.readableBytes <= Self.gatheredCapacity {
            self.gathered = nil  // so that the buffer is uniquely referenced while it grows
            if buffer.writableBytes < bytes.readableBytes {
                // The first write's own buffer (no copy so far): copy once, with room for what follows (a
                // lone answer's frames fit in 2 KiB; a busy tick's grow the buffer as they come).
                let needed = buffer.readableBytes + bytes.readableBytes
                var larger = context.channel.allocator.buffer(capacity: min(Self.gatheredCapacity, max(2048, 2 * needed)))
                larger.writeImmutableBuffer(buffer)
                buffer = larger
            }
            buffer.writeImmutableBuffer(bytes)
            self.gathered = buffer
        } else {
            self.sendGathered(context: context)
            self.gathered = bytes
        }
        if let promise {
            if let first = self.gatheredPromise {
                first.futureResult.cascade(to: promise)
            } else {
                self.gatheredPromise = promise
            }
        }
    }

    public func flush(context: ChannelHandlerContext) {
        if self.flushQueued {
            return
        }
        self.flushQueued = true
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().execute {
            self.flushNow(context: loopBoundContext.value)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        self.flushNow(context: context)
        // Writes never flushed meet the close as they would have without this handler.
        self.sendGathered(context: context)
        context.close(mode: mode, promise: promise)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.flushNow(context: context)
        self.sendGathered(context: context)
    }

    private func sendGathered(context: ChannelHandlerContext) {
        guard let buffer = self.gathered else { return }
        let promise = self.gatheredPromise
        self.gathered = nil
        self.gatheredPromise = nil
        context.write(Self.wrapOutbound(.byteBuffer(buffer)), promise: promise)
    }

    private func flushNow(context: ChannelHandlerContext) {
        guard self.flushQueued else {
            return
        }
        self.flushQueued = false
        self.sendGathered(context: context)
        context.flush()
    }
}

@available(*, unavailable)
extension TickFlushCoalescer: Sendable {}
