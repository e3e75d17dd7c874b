import NIOCore
import NIOHTTP1

/// Compression levels and windows. The defaults were chosen by measurement against nginx at comparable
/// levels (docs/benchmarks.md, "Compression"); the window bits bound memory per stream (docs/decisions.md).
public struct CompressionSettings: Sendable, Equatable {
    /// Brotli quality, 0-11.
    public var brotliQuality: Int
    /// Brotli window, 10-24 bits; a body known to be shorter gets a window just large enough.
    public var brotliWindowBits: Int
    /// gzip level, 1-9.
    public var gzipLevel: Int
    /// gzip window, 9-15 bits; a body known to be shorter gets a window just large enough.
    public var gzipWindowBits: Int
    /// zlib's memLevel, 1-9: its hash table and pending block.
    public var gzipMemLevel: Int

    public init(brotliQuality: Int = 5, brotliWindowBits: Int = 18, gzipLevel: Int = 5, gzipWindowBits: Int = 15,
                gzipMemLevel: Int = 8) {
        self.brotliQuality = brotliQuality
        self.brotliWindowBits = brotliWindowBits
        self.gzipLevel = gzipLevel
        self.gzipWindowBits = gzipWindowBits
        self.gzipMemLevel = gzipMemLevel
    }

    /// The smallest window (at least `minimum` bits, at most `configured`) that holds `length` bytes: a
    /// 3 KiB body needs no 256 KiB window (nginx's gzip filter sizes zlib the same way).
    static func windowBits(for length: Int, configured: Int, minimum: Int) -> Int {
        var bits = minimum
        while bits < configured && (1 << bits) < length {
            bits += 1
        }
        return bits
    }
}

/// How many responses may be compressed at once by the handlers that share it (one listener on one event
/// loop): each encoder holds megabytes (docs/decisions.md), and an HTTP/2 client can open 128 streams per
/// connection. A response that finds the budget spent goes out as it is (with `Vary`), which is always correct.
/// Used on one event loop only.
public final class CompressionBudget {
    public let limit: Int
    public private(set) var inUse = 0

    public init(limit: Int) {
        self.limit = limit
    }

    func take() -> Bool {
        guard self.inUse < self.limit else { return false }
        self.inUse += 1
        return true
    }

    func give() {
        self.inUse -= 1
    }
}

@available(*, unavailable)
extension CompressionBudget: Sendable {}

/// Compresses responses on a listener with `compression: true` (Brotli or gzip, by
/// ``ResponseCompressionPolicy``), as the body streams: each body part is fed to the encoder as it comes
/// and what the encoder emits goes on, so no response is held whole; a stream holds at most its encoder
/// (bounded by the window bits, docs/decisions.md) and one part's output.
///
/// Shaped like swift-nio-extras' `HTTPResponseCompressor`: it sits between the HTTP codec (HTTP/1 response
/// encoder, or an HTTP/2 stream's HTTP/1 codec) and the proxy, keeps a queue of what each request said in
/// `Accept-Encoding` (pipelined requests are answered in order), and rewrites the framed head the proxy
/// writes. Unlike it, it never buffers a body until a flush and does not force an encoder flush per write,
/// which would cost output size on every backend read.
///
/// `isEnabled` is asked once per response: a listener whose `compression` is switched off stops compressing
/// at the next response on connections that already have the handler (docs/decisions.md).
///
/// What it does not do: compress bodies without a `Content-Length` (chunked or close-delimited backend
/// responses), file regions (the proxy never writes them), or trailers.
public final class ResponseCompressionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias InboundOut = HTTPServerRequestPart
    public typealias OutboundIn = HTTPServerResponsePart
    public typealias OutboundOut = HTTPServerResponsePart

    public enum CompressionError: Error {
        /// A file region cannot be fed to an encoder.
        case fileRegionNotCompressible
    }

    /// The encoder of the response being compressed; nil while none is. Freed at the response's end, and at
    /// once when the connection or stream goes away.
    private enum Encoder {
        case brotli(BrotliEncoder)
        case gzip(GzipEncoder)

        func encode(_ input: ByteBuffer, into output: inout ByteBuffer?, allocator: ByteBufferAllocator) throws {
            switch self {
            case .brotli(let encoder): try encoder.encode(input, into: &output, allocator: allocator)
            case .gzip(let encoder): try encoder.encode(input, into: &output, allocator: allocator)
            }
        }

        func finish(into output: inout ByteBuffer?, allocator: ByteBufferAllocator) throws {
            switch self {
            case .brotli(let encoder): try encoder.finish(into: &output, allocator: allocator)
            case .gzip(let encoder): try encoder.finish(into: &output, allocator: allocator)
            }
        }

        var peakBytes: Int {
            switch self {
            case .brotli(let encoder): return encoder.peakBytes
            case .gzip(let encoder): return encoder.peakBytes
            }
        }
    }

    private let settings: CompressionSettings
    private let isEnabled: () -> Bool
    private let budget: CompressionBudget?
    /// What each request whose response has not started said; one entry in the usual case.
    private var requests = CircularBuffer<CompressionRequest>(initialCapacity: 2)
    /// Each encoder was made after taking a turn of the budget; it gives the turn back when it goes.
    private var encoder: Encoder? {
        didSet {
            if oldValue != nil { self.budget?.give() }
        }
    }
    /// The promise of a body write that produced no output yet: completed with the next write that does.
    private var heldPromise: EventLoopPromise<Void>?
    /// The most bytes an encoder of this handler held (tests and docs/decisions.md's figure).
    public private(set) var peakEncoderBytes = 0

    public init(settings: CompressionSettings = CompressionSettings(), budget: CompressionBudget? = nil,
                isEnabled: @escaping () -> Bool = { true }) {
        self.settings = settings
        self.budget = budget
        self.isEnabled = isEnabled
    }

    /// Whether a response is being compressed now (tests).
    public var isCompressing: Bool { self.encoder != nil }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = self.unwrapInboundIn(data) {
            self.requests.append(CompressionRequest(head))
        }
        context.fireChannelRead(data)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.release(failing: ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.release(failing: ChannelError.ioOnClosedChannel)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch self.unwrapOutboundIn(data) {
        case .head(var head):
            // An informational head (100 Continue) precedes the response of the same request.
            guard head.status.code >= 200 else {
                context.write(data, promise: promise)
                return
            }
            guard let request = self.requests.popFirst(), self.isEnabled() else {
                context.write(data, promise: promise)
                return
            }
            var decision = ResponseCompressionPolicy.decide(request, head)
            if decision.coding != nil, let budget = self.budget, !budget.take() {
                decision.coding = nil  // as it is: every encoder this budget allows is busy
            }
            if let coding = decision.coding {
                do {
                    self.encoder = try self.makeEncoder(coding, length: ResponseCompressionPolicy.contentLength(head.headers) ?? 0)
                } catch {
                    decision.coding = nil  // sent as it is; the encoder could not be made
                    self.budget?.give()
                }
            }
            guard decision != .untouched else {
                context.write(data, promise: promise)
                return
            }
            ResponseCompressionPolicy.rewrite(&head, decision, requestVersion: request.version)
            context.write(Self.wrapOutbound(.head(head)), promise: promise)
        case .body(.byteBuffer(let buffer)):
            guard let encoder = self.encoder else {
                context.write(data, promise: promise)
                return
            }
            var output: ByteBuffer?
            do {
                try encoder.encode(buffer, into: &output, allocator: context.channel.allocator)
            } catch {
                self.fail(context: context, promise: promise, error: error)
                return
            }
            self.writeOutput(output, context: context, promise: promise)
        case .body(.fileRegion):
            guard self.encoder != nil else {
                context.write(data, promise: promise)
                return
            }
            self.fail(context: context, promise: promise, error: CompressionError.fileRegionNotCompressible)
        case .end:
            guard let encoder = self.encoder else {
                context.write(data, promise: promise)
                return
            }
            var output: ByteBuffer?
            do {
                try encoder.finish(into: &output, allocator: context.channel.allocator)
            } catch {
                self.fail(context: context, promise: promise, error: error)
                return
            }
            self.peakEncoderBytes = max(self.peakEncoderBytes, encoder.peakBytes)
            self.encoder = nil
            self.writeOutput(output, context: context, promise: nil)
            // A promise still held (the stream ended with no output after it) completes with the end.
            var endPromise = promise
            if let held = self.heldPromise {
                self.heldPromise = nil
                if let promise { held.futureResult.cascade(to: promise) }
                endPromise = held
            }
            context.write(data, promise: endPromise)
        }
    }

    private func makeEncoder(_ coding: ContentCoding, length: Int) throws -> Encoder {
        switch coding {
        case .brotli:
            let bits = CompressionSettings.windowBits(for: length, configured: self.settings.brotliWindowBits, minimum: 10)
            return .brotli(try BrotliEncoder(quality: self.settings.brotliQuality, windowBits: bits, sizeHint: length))
        case .gzip:
            let bits = CompressionSettings.windowBits(for: length, configured: self.settings.gzipWindowBits, minimum: 9)
            return .gzip(try GzipEncoder(level: self.settings.gzipLevel, windowBits: bits, memLevel: self.settings.gzipMemLevel))
        }
    }

    /// Writes what the encoder emitted, with the promises of the writes it came from; holds the promise when
    /// nothing came out yet. The first held promise is the one a write carries; later ones follow it.
    private func writeOutput(_ output: ByteBuffer?, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard let output else {
            if let promise {
                if let held = self.heldPromise {
                    held.futureResult.cascade(to: promise)
                } else {
                    self.heldPromise = promise
                }
            }
            return
        }
        var combined = self.heldPromise
        self.heldPromise = nil
        if let promise {
            if let held = combined {
                held.futureResult.cascade(to: promise)
            } else {
                combined = promise
            }
        }
        context.write(Self.wrapOutbound(.body(.byteBuffer(output))), promise: combined)
    }

    /// An encoder failed mid-body: the response cannot be completed, so the connection (or stream) closes.
    private func fail(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?, error: Error) {
        promise?.fail(error)
        self.release(failing: error)
        context.close(promise: nil)
    }

    private func release(failing error: Error) {
        self.encoder = nil
        self.requests.removeAll()
        if let held = self.heldPromise {
            self.heldPromise = nil
            held.fail(error)
        }
    }
}

@available(*, unavailable)
extension ResponseCompressionHandler: Sendable {}
