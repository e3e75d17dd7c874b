import CBrotli
import NIOCore

/// Owns one libbrotli encoder (`BrotliEncoderState`) for one response body and frees it in `deinit`.
/// Nothing outside this file sees a C type.
///
/// Streaming: ``encode(_:into:allocator:)`` feeds bytes without forcing a flush, so the encoder emits output
/// as its blocks fill; ``finish(into:allocator:)`` ends the stream. Output is taken from the encoder's own
/// buffer (`BrotliEncoderTakeOutput`) and copied into buffers of exactly its size, so a write that produces
/// nothing allocates nothing.
///
/// Memory: every byte the encoder holds is counted by the allocator callbacks in the CBrotli shim
/// (``heldBytes``, ``peakBytes``); the window (`windowBits`) and quality bound it (docs/decisions.md).
public final class BrotliEncoder {
    public enum Failure: Error, Equatable {
        case cannotCreate
        case invalidParameter
        case streamError
    }

    private let state: OpaquePointer
    private let meter: UnsafeMutablePointer<alb_brotli_meter>

    /// - Parameters:
    ///   - quality: 0-11 (brotli's own range).
    ///   - windowBits: 10-24: the sliding window is 2^windowBits bytes minus 16.
    ///   - sizeHint: the body's length when known (0: unknown); brotli sizes its tables to it.
    public init(quality: Int, windowBits: Int, sizeHint: Int = 0) throws {
        // libbrotli would clamp these silently when the stream starts.
        guard (0...11).contains(quality), (10...24).contains(windowBits) else { throw Failure.invalidParameter }
        let meter = UnsafeMutablePointer<alb_brotli_meter>.allocate(capacity: 1)
        meter.initialize(to: alb_brotli_meter(current: 0, peak: 0))
        guard let state = alb_brotli_encoder_create(meter) else {
            meter.deallocate()
            throw Failure.cannotCreate
        }
        self.state = state
        self.meter = meter
        let hint = UInt32(clamping: max(0, sizeHint))
        guard BrotliEncoderSetParameter(state, BROTLI_PARAM_QUALITY, UInt32(clamping: quality)) == BROTLI_TRUE,
              BrotliEncoderSetParameter(state, BROTLI_PARAM_LGWIN, UInt32(clamping: windowBits)) == BROTLI_TRUE,
              BrotliEncoderSetParameter(state, BROTLI_PARAM_SIZE_HINT, hint) == BROTLI_TRUE
        else {
            throw Failure.invalidParameter  // deinit frees the state
        }
    }

    deinit {
        BrotliEncoderDestroyInstance(self.state)
        self.meter.deallocate()
    }

    /// Bytes the encoder holds now (its window, hash tables and pending output).
    public var heldBytes: Int { Int(self.meter.pointee.current) }

    /// The most bytes the encoder has held at once.
    public var peakBytes: Int { Int(self.meter.pointee.peak) }

    /// Feeds `input`; whatever the encoder emits is appended to `output` (created when needed).
    public func encode(_ input: ByteBuffer, into output: inout ByteBuffer?, allocator: ByteBufferAllocator) throws {
        try input.withUnsafeReadableBytes { bytes in
            try self.run(BROTLI_OPERATION_PROCESS, bytes, into: &output, allocator: allocator)
        }
    }

    /// Ends the stream: the rest of the output, then the encoder is spent.
    public func finish(into output: inout ByteBuffer?, allocator: ByteBufferAllocator) throws {
        try self.run(BROTLI_OPERATION_FINISH, UnsafeRawBufferPointer(start: nil, count: 0), into: &output,
                     allocator: allocator)
    }

    private func run(_ operation: BrotliEncoderOperation, _ input: UnsafeRawBufferPointer, into output: inout ByteBuffer?,
                     allocator: ByteBufferAllocator) throws {
        var availableIn = input.count
        var nextIn: UnsafePointer<UInt8>? = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        while true {
            var availableOut = 0
            var nextOut: UnsafeMutablePointer<UInt8>? = nil
            let ok = withUnsafePointer(to: 0 as UInt8) { empty -> Int32 in
                if nextIn == nil { nextIn = empty }
                defer { if availableIn == 0 { nextIn = nil } }
                return BrotliEncoderCompressStream(self.state, operation, &availableIn, &nextIn, &availableOut, &nextOut, nil)
            }
            guard ok == BROTLI_TRUE else { throw Failure.streamError }
            self.takeOutput(into: &output, allocator: allocator)
            guard availableIn == 0 else { continue }
            if operation == BROTLI_OPERATION_FINISH && BrotliEncoderIsFinished(self.state) != BROTLI_TRUE { continue }
            return
        }
    }

    private func takeOutput(into output: inout ByteBuffer?, allocator: ByteBufferAllocator) {
        while BrotliEncoderHasMoreOutput(self.state) == BROTLI_TRUE {
            var size = 0
            guard let bytes = BrotliEncoderTakeOutput(self.state, &size), size > 0 else { return }
            var buffer = output ?? allocator.buffer(capacity: size)
            output = nil  // one reference, so the write below does not copy
            buffer.writeBytes(UnsafeRawBufferPointer(start: bytes, count: size))
            output = buffer
        }
    }
}

@available(*, unavailable)
extension BrotliEncoder: Sendable {}
