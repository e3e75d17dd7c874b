import NIOCore

// NIO's `wrapOutboundOut` and `wrapInboundOut` are generic protocol-extension methods marked `@inlinable`, yet
// the optimiser neither inlines nor specialises them at our handlers' call sites (not even with cross-module and
// link-time optimisation): each write or read of a part called the generic body, whose `NIOAny.init` then asks
// the runtime whether the part is a `ByteBuffer`, an `IOData` or an envelope (`swift_dynamicCast`, about 1% of
// a proxied request's CPU). Forced inline, `NIOAny.init` sees the concrete type and the casts fold away.
//
// Unwrapping has the same trap, with a simpler way out. Called on the dynamic `Self` type
// (`Self.unwrapInboundIn(data)`, even in a final class), NIO's `forceAs` ran unspecialised: it looked up the
// associated type, the `Optional` of it and then cast, about 1,000 instructions a part, 5,700 a proxied request
// (callgrind). Called on `self` (`self.unwrapInboundIn(data)`) it is specialised for the concrete part type:
// 55,368 -> 52,198 instructions a request. Handlers unwrap through `self`.

// What every handler that writes conforms to, inbound ones included; NIO declares `wrapOutboundOut` there.
extension _EmittingChannelHandler {
    /// `wrapOutboundOut`, always inlined (see the top of this file).
    @inlinable @inline(__always)
    public static func wrapOutbound(_ value: OutboundOut) -> NIOAny {
        NIOAny(value)
    }
}

extension ChannelInboundHandler {
    /// `wrapInboundOut`, always inlined (see the top of this file).
    @inlinable @inline(__always)
    public static func wrapInbound(_ value: InboundOut) -> NIOAny {
        NIOAny(value)
    }
}
