@testable import ALBDataPlane
import ALBQUIC
import NIOCore
import XCTest

final class UDPOffloadTests: XCTestCase {
    private var local: SocketAddress!
    private var client: SocketAddress!
    private var other: SocketAddress!

    override func setUpWithError() throws {
        local = try SocketAddress(ipAddress: "127.0.0.1", port: 443)
        client = try SocketAddress(ipAddress: "127.0.0.1", port: 50000)
        other = try SocketAddress(ipAddress: "127.0.0.1", port: 50001)
    }

    private func datagram(_ size: Int, to remote: SocketAddress, fill: UInt8 = 1, ecn: UInt8 = 0) -> QUICOutgoingDatagram {
        QUICOutgoingDatagram(bytes: ByteBuffer(repeating: fill, count: size), path: QUICPath(local: local, remote: remote),
                             ecn: ecn)
    }

    func testARunOfEqualDatagramsToOneClientIsOneSendCutAtTheirSize() {
        let datagrams = [datagram(1200, to: client, fill: 1), datagram(1200, to: client, fill: 2),
                         datagram(1200, to: client, fill: 3), datagram(700, to: client, fill: 4),
                         datagram(1200, to: other, fill: 5)]
        let sends = UDPOffload.sends(datagrams, allocator: ByteBufferAllocator())
        XCTAssertEqual(sends.count, 2)
        XCTAssertEqual(sends[0].remote, client)
        XCTAssertEqual(sends[0].segmentSize, 1200)
        XCTAssertEqual(sends[0].bytes.readableBytes, 4300)
        // The kernel's cut gives the same datagrams back, in order.
        let cut = UDPOffload.datagrams(in: sends[0].bytes, segmentSize: sends[0].segmentSize)
        XCTAssertEqual(cut, Array(datagrams[0..<4].map(\.bytes)))
        XCTAssertEqual(sends[1].remote, other)
        XCTAssertNil(sends[1].segmentSize, "a lone datagram goes as it is")
        XCTAssertEqual(sends[1].bytes, datagrams[4].bytes)
    }

    func testAShorterDatagramEndsARunAndALargerOneStartsAnother() {
        let sizes = [1200, 800, 1200, 1300, 1300]
        let sends = UDPOffload.sends(sizes.map { datagram($0, to: client) }, allocator: ByteBufferAllocator())
        XCTAssertEqual(sends.map(\.segmentSize), [1200, nil, 1300])
        XCTAssertEqual(sends.map(\.bytes.readableBytes), [2000, 1200, 2600])
    }

    func testDifferentECNMarksAreNotMerged() {
        let sends = UDPOffload.sends([datagram(1200, to: client, ecn: 0), datagram(1200, to: client, ecn: 2)],
                                     allocator: ByteBufferAllocator())
        XCTAssertEqual(sends.map(\.segmentSize), [nil, nil])
    }

    func testASendCarriesAtMostTheKernelsSegmentsAndBytes() {
        let many = UDPOffload.sends((0..<70).map { _ in datagram(900, to: client) }, allocator: ByteBufferAllocator())
        XCTAssertEqual(many.map(\.bytes.readableBytes), [64 * 900, 6 * 900])
        let large = UDPOffload.sends((0..<60).map { _ in datagram(1452, to: client) }, allocator: ByteBufferAllocator())
        XCTAssertTrue(large.allSatisfy { $0.bytes.readableBytes <= UDPOffload.maxBytes })
        XCTAssertEqual(large.map(\.bytes.readableBytes).reduce(0, +), 60 * 1452)
    }

    func testAReceivedBufferIsCutOnlyWhenTheKernelCoalescedIt() {
        var buffer = ByteBuffer()
        buffer.writeBytes((0..<3500).map { UInt8(truncatingIfNeeded: $0) })
        let cut = UDPOffload.datagrams(in: buffer, segmentSize: 1200)
        XCTAssertEqual(cut.map(\.readableBytes), [1200, 1200, 1100])
        XCTAssertEqual(cut.reduce(into: ByteBuffer()) { $0.writeImmutableBuffer($1) }, buffer)
        XCTAssertEqual(UDPOffload.datagrams(in: buffer, segmentSize: nil), [buffer])
        XCTAssertEqual(UDPOffload.datagrams(in: buffer, segmentSize: 4000), [buffer])
        XCTAssertEqual(UDPOffload.datagrams(in: buffer, segmentSize: 0), [buffer])
    }
}
