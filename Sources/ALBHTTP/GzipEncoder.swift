import CZlib
import NIOCore

/// Owns one zlib deflate stream with the gzip wrapper (RFC 1952) for one response body and ends it in
/// `deinit`. Nothing outside this file sees a C type.
///
/// Streaming: ``encode(_:into:allocator:)`` deflates with `Z_NO_FLUSH`, so zlib emits output as its blocks
/// fill; ``finish(into:allocator:)`` writes the last block and the trailer.
///
/// Memory: every byte zlib holds is counted by the allocator callbacks in the CZlib shim (``heldBytes``,
/// ``peakBytes``): about 2^(windowBits+2) + 2^(memLevel+9) bytes plus 6 KiB (zlib's own formula).
public final class GzipEncoder {
    public enum Failure: Error, Equatable {
        case cannotCreate(code: Int32)
        case streamError(code: Int32)
    }

    private let stream: UnsafeMutablePointer<z_stream>
    private let meter: UnsafeMutablePointer<alb_zlib_meter>

    /// - Parameters:
    ///   - level: 1-9.
    ///   - windowBits: 9-15: the window is 2^windowBits bytes.
    ///   - memLevel: 1-9: the hash table and block buffer size.
    public init(level: Int, windowBits: Int, memLevel: Int) throws {
        let meter = UnsafeMutablePointer<alb_zlib_meter>.allocate(capacity: 1)
        meter.initialize(to: alb_zlib_meter(current: 0, peak: 0))
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let code = alb_deflate_init_gzip(stream, Int32(clamping: level), Int32(clamping: windowBits),
                                         Int32(clamping: memLevel), meter)
        guard code == Z_OK else {
            stream.deinitialize(count: 1)
            stream.deallocate()
            meter.deallocate()
            throw Failure.cannotCreate(code: code)
        }
        self.stream = stream
        self.meter = meter
    }

    deinit {
        deflateEnd(self.stream)
        self.stream.deinitialize(count: 1)
        self.stream.deallocate()
        self.meter.deallocate()
    }

    /// Bytes zlib holds now (window, hash chains, pending block).
    public var heldBytes: Int { Int(self.meter.pointee.current) }

    /// The most bytes zlib has held at once.
    public var peakBytes: Int { Int(self.meter.pointee.peak) }

    /// Feeds `input`; whatever zlib emits is appended to `output` (created when needed).
    public func encode(_ input: ByteBuffer, into output: inout ByteBuffer?, allocator: ByteBufferAllocator) throws {
        try input.withUnsafeReadableBytes { bytes in
            try self.run(Z_NO_FLUSH, bytes, into: &output, allocator: allocator)
        }
    }

    /// Ends the stream: the last block and the gzip trailer.
    public func finish(into output: inout ByteBuffer?, allocator: ByteBufferAllocator) throws {
        try self.run(Z_FINISH, UnsafeRawBufferPointer(start: nil, count: 0), into: &output, allocator: allocator)
    }

    private func run(_ flush: Int32, _ input: UnsafeRawBufferPointer, into output: inout ByteBuffer?,
                     allocator: ByteBufferAllocator) throws {
        let stream = self.stream
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        defer {
            stream.pointee.next_in = nil
            stream.pointee.avail_in = 0
        }
        // Room for what one call may emit; most calls with Z_NO_FLUSH emit nothing, and then the buffer is dropped.
        let room = max(4096, input.count / 4)
        while true {
            var buffer = output ?? allocator.buffer(capacity: room)
            output = nil  // one reference, so the writes below do not copy
            var code = Z_OK
            var filled = false
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { out in
                stream.pointee.next_out = out.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.pointee.avail_out = uInt(out.count)
                code = deflate(stream, flush)
                filled = stream.pointee.avail_out == 0
                let written = out.count - Int(stream.pointee.avail_out)
                stream.pointee.next_out = nil
                stream.pointee.avail_out = 0
                return written
            }
            if buffer.readableBytes > 0 { output = buffer }
            if code == Z_STREAM_END { return }
            guard code == Z_OK || code == Z_BUF_ERROR else { throw Failure.streamError(code: code) }
            // A filled buffer: zlib may have more for this call. Room left: it took all the input and emitted
            // all it can without more (with Z_FINISH that would have been Z_STREAM_END).
            if filled { continue }
            guard flush == Z_FINISH else { return }
            throw Failure.streamError(code: code)
        }
    }
}

@available(*, unavailable)
extension GzipEncoder: Sendable {}
