import CNgtcp2

/// The ngtcp2 return codes the datagram path tells apart, as a Swift enum. ngtcp2 0.12 returns 0 or a
/// positive count for success and a negative `NGTCP2_ERR_*` code otherwise; only this file and the owners of
/// ngtcp2 objects see those numbers.
enum NGTCP2Status: Equatable, Sendable {
    case ok
    /// `NGTCP2_ERR_INVALID_ARGUMENT`: for the packet decoders, a header that cannot be decoded.
    case invalidArgument
    /// `NGTCP2_ERR_VERSION_NEGOTIATION`: a long header of a version ngtcp2 does not support.
    case versionNegotiation
    /// `NGTCP2_ERR_RETRY`: `ngtcp2_accept` saw a 0-RTT packet for no connection (or, later, a connection
    /// asks for a Retry).
    case retry
    /// `NGTCP2_ERR_NOBUF`: the destination buffer is too small.
    case noBuffer
    case other(Int32)

    init(_ code: Int32) {
        switch code {
        case 0...: self = .ok
        case NGTCP2_ERR_INVALID_ARGUMENT: self = .invalidArgument
        case NGTCP2_ERR_VERSION_NEGOTIATION: self = .versionNegotiation
        case NGTCP2_ERR_RETRY: self = .retry
        case NGTCP2_ERR_NOBUF: self = .noBuffer
        default: self = .other(code)
        }
    }
}
