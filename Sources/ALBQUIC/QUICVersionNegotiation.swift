import CNgtcp2
import NIOCore

/// Builds the Version Negotiation packet that answers a long header of a version this listener does not
/// serve (RFC 9000 section 6, RFC 8999 section 6), with `ngtcp2_pkt_write_version_negotiation`.
///
/// The packet echoes the client's connection IDs swapped (its source ID becomes our destination ID) and
/// lists QUIC v1 and one reserved version, so that clients exercise their handling of versions they do
/// not know (RFC 9000 section 6.3). It is never larger than the datagram it answers (at least 1200 bytes;
/// the packet is at most 7 + 255 + 255 + 8 bytes), so it amplifies nothing.
public enum QUICVersionNegotiation {
    /// The versions this listener offers, before the reserved one.
    public static let supportedVersions: [QUICVersion] = [.v1]

    /// The packet answering `header`, or `nil` when `header` has no source connection ID (a short header).
    ///
    /// `random` supplies the first byte's seven unused bits and the reserved version (0x?a?a?a?a).
    public static func packet(answering header: QUICPacketHeader, random: inout some RandomNumberGenerator,
                              allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard let clientSource = header.sourceConnectionID else { return nil }
        let reserved = (random.next() as UInt32) & 0xf0f0_f0f0 | 0x0a0a_0a0a
        let versions = supportedVersions.map(\.rawValue) + [reserved]
        let unusedBits = (random.next() as UInt8) & 0x7f
        let length = 7 + clientSource.count + header.destinationConnectionID.count + 4 * versions.count
        var buffer = allocator.buffer(capacity: length)
        let written = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { destination in
            guard let base = destination.baseAddress else { return 0 }
            let code = clientSource.withUnsafeBytes { vnDestination in
                header.destinationConnectionID.withUnsafeBytes { vnSource in
                    versions.withUnsafeBufferPointer { list in
                        ngtcp2_pkt_write_version_negotiation(
                            base.assumingMemoryBound(to: UInt8.self), destination.count, unusedBits,
                            vnDestination.baseAddress?.assumingMemoryBound(to: UInt8.self), vnDestination.count,
                            vnSource.baseAddress?.assumingMemoryBound(to: UInt8.self), vnSource.count,
                            list.baseAddress, list.count)
                    }
                }
            }
            // A negative code (NGTCP2_ERR_NOBUF, impossible with this capacity) writes nothing.
            return code > 0 ? Int(code) : 0
        }
        return written > 0 ? buffer : nil
    }
}
