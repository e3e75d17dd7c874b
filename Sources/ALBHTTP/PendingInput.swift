import NIOCore

/// The bytes a decoding handler has received and not decoded yet (the client side's
/// ``HTTP1ConnectionHandler``, the backend side's `BackendHTTP1Handler`). Nil between messages, so an
/// idle connection holds no buffer of its own and the channel's receive buffer can be reused. Inlinable:
/// it runs on every read, also from the data plane's module.
public struct PendingInput {
    @usableFromInline var held: ByteBuffer?

    @inlinable
    public init() {}

    /// Adds a read after what is held, growing the held buffer in place.
    @inlinable
    public mutating func append(_ read: ByteBuffer) {
        guard var held = self.held else {
            self.held = read
            return
        }
        self.held = nil  // so `held` is the buffer's only owner and grows in place
        held.writeImmutableBuffer(read)
        self.held = held
    }

    /// Nothing is held.
    @inlinable
    public var isEmpty: Bool { self.held == nil }

    /// Everything held, for a decode; nothing is held after.
    @inlinable
    public mutating func take() -> ByteBuffer? {
        defer { self.held = nil }
        return self.held
    }

    /// Puts back what a decode left unread, in front of what arrived while it ran (a re-entrant read).
    /// Returns whether anything arrived meanwhile, which is then worth another decode.
    @inlinable
    public mutating func putBack(_ remainder: inout ByteBuffer) -> Bool {
        let arrivedMeanwhile = self.held != nil
        if remainder.readableBytes > 0 {
            if var later = self.held {
                remainder.writeBuffer(&later)
            }
            self.held = remainder
        }
        return arrivedMeanwhile
    }

    @inlinable
    public mutating func removeAll() {
        self.held = nil
    }
}
