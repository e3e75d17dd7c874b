import NIOCore

/// The memory that the heads written on one event loop are encoded into, used again for the next head once
/// the socket has written the last one.
///
/// Why: a head encoded into a buffer of its own costs two allocations (the buffer's storage object and its
/// bytes) and their frees, twice per proxied HTTP/1 request (the request to the backend, the response to the
/// client), 4 of a keep-alive request's 12 allocations. A head usually leaves in the same event-loop tick it is
/// written in, so by the next head nothing holds this memory any more and it is cleared and reused. When a write is
/// still pending (a slow client, a head written before the flush of another), `ByteBuffer`'s copy-on-write
/// gives the next head new memory, which is kept from then on: nothing written is ever overwritten.
///
/// One per event loop, shared by the loop's connections, never per connection (``HTTP1LoopMemory``): an idle
/// connection holds none of it. Loop-confined: not `Sendable`.
public final class HeadEncodingBuffer {
    private var buffer: ByteBuffer
    private let allocator: ByteBufferAllocator

    /// Memory kept between heads; a head that needed more (a large cookie, say) gets memory that is
    /// dropped after it instead of staying with the loop.
    static let keptCapacity = 4096

    public init(allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        self.allocator = allocator
        self.buffer = allocator.buffer(capacity: 1024)
    }

    /// The bytes `encode` writes into an empty buffer, in this loop's memory when nothing holds it.
    func encode(_ encode: (inout ByteBuffer) -> Void) -> ByteBuffer {
        if self.buffer.capacity > Self.keptCapacity {
            self.buffer = self.allocator.buffer(capacity: 1024)
        } else {
            self.buffer.clear()
        }
        encode(&self.buffer)
        return self.buffer
    }
}

@available(*, unavailable)
extension HeadEncodingBuffer: Sendable {}

/// What an event loop's HTTP/1 connections share, both ways (clients and backends), so that a request does not
/// allocate what the one before it already had: the memory heads are encoded into and the texts of fields
/// decoded lately. Per loop, never per connection.
public final class HTTP1LoopMemory {
    public let heads = HeadEncodingBuffer()
    public let fieldTexts = FieldTextCache()

    public init() {}
}

@available(*, unavailable)
extension HTTP1LoopMemory: Sendable {}
