import ALBQUIC
import NIOCore

/// Generic segmentation and receive offload for a QUIC listener's datagrams (Linux `UDP_SEGMENT` and
/// `UDP_GRO`, which NIO exposes): fewer system calls and fewer trips through the kernel's UDP path per packet.
///
/// Sending: ngtcp2 fills packets up to the path's payload size, so a connection with data to send writes
/// runs of equal-sized datagrams. A run to one address (every datagram the same size but the last, which may
/// be shorter) goes out as one buffer with a segment size, and the kernel cuts it into the same datagrams.
/// Receiving: with `UDP_GRO` the kernel hands over a burst of one sender's datagrams as one buffer and their
/// size; ``datagrams(in:segmentSize:)`` cuts it back.
enum UDPOffload {
    /// The most segments one send may carry (the kernel's `UDP_MAX_SEGMENTS` since it has had one: 64).
    static let maxSegments = 64
    /// The most bytes one send may carry: a UDP datagram's largest IPv4 payload, 65,535 - 20 - 8.
    static let maxBytes = 65_507

    /// What to send: each element one `sendmsg`, with the segment size for a run of two or more datagrams.
    struct Send {
        var remote: SocketAddress
        var bytes: ByteBuffer
        var segmentSize: Int?
    }

    /// The datagrams in order, runs merged; a lone datagram is passed on without a copy.
    static func sends(_ datagrams: [QUICOutgoingDatagram], allocator: ByteBufferAllocator) -> [Send] {
        var sends: [Send] = []
        var start = 0
        while start < datagrams.count {
            let first = datagrams[start]
            let size = first.bytes.readableBytes
            var end = start + 1
            var total = size
            while size > 0, end < datagrams.count, end - start < Self.maxSegments {
                let next = datagrams[end]
                let length = next.bytes.readableBytes
                guard next.path.remote == first.path.remote, next.ecn == first.ecn, length > 0, length <= size,
                      total + length <= Self.maxBytes else { break }
                total += length
                end += 1
                if length < size { break }  // a shorter datagram can only end a run
            }
            if end - start == 1 {
                sends.append(Send(remote: first.path.remote, bytes: first.bytes, segmentSize: nil))
            } else {
                var merged = allocator.buffer(capacity: total)
                for index in start..<end {
                    merged.writeImmutableBuffer(datagrams[index].bytes)
                }
                sends.append(Send(remote: first.path.remote, bytes: merged, segmentSize: size))
            }
            start = end
        }
        return sends
    }

    /// The datagrams a received buffer holds: itself, or (coalesced by `UDP_GRO`) consecutive slices of
    /// `segmentSize` bytes, the last possibly shorter. Slices share the buffer's storage.
    static func datagrams(in buffer: ByteBuffer, segmentSize: Int?) -> [ByteBuffer] {
        guard let segmentSize, segmentSize > 0, buffer.readableBytes > segmentSize else { return [buffer] }
        var remaining = buffer
        var datagrams: [ByteBuffer] = []
        datagrams.reserveCapacity((buffer.readableBytes + segmentSize - 1) / segmentSize)
        while let slice = remaining.readSlice(length: min(segmentSize, remaining.readableBytes)),
              slice.readableBytes > 0 {
            datagrams.append(slice)
        }
        return datagrams
    }
}
