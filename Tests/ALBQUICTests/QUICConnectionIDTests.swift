import NIOCore
import XCTest

@testable import ALBQUIC

final class QUICConnectionIDTests: XCTestCase {
    func testBytesRoundTripAtEveryLength() throws {
        for length in [0, 1, 8, 19, 20, 21, 255] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 1) }
            let id = try XCTUnwrap(QUICConnectionID(bytes))
            XCTAssertEqual(id.count, length)
            XCTAssertEqual(id.bytes, bytes)
            XCTAssertEqual(id.isEmpty, length == 0)
        }
        XCTAssertNil(QUICConnectionID([UInt8](repeating: 0, count: 256)))
    }

    func testEqualityAndHashingFollowTheBytes() {
        let a = QUICConnectionID.of([1, 2, 3])
        XCTAssertEqual(a, .of([1, 2, 3]))
        XCTAssertNotEqual(a, .of([1, 2, 3, 0]), "a trailing zero byte is part of the ID")
        XCTAssertNotEqual(QUICConnectionID(), .of([0]))
        XCTAssertEqual(Set([a, .of([1, 2, 3]), .of([3, 2, 1])]).count, 2)
        let long = [UInt8](repeating: 9, count: 30)
        XCTAssertEqual(QUICConnectionID.of(long), .of(long))
    }

    func testDescriptionIsLowercaseHex() {
        XCTAssertEqual(QUICConnectionID.of([0x00, 0xab, 0x0f]).description, "00ab0f")
        XCTAssertEqual(QUICConnectionID().description, "")
    }

    func testAShortHeaderParsesWithTheGivenLength() throws {
        let datagram = ByteBuffer(bytes: QUICTestPackets.short(dcid: [7, 7, 7, 7, 7]))
        let header = try QUICPacketHeader.parse(datagram, shortHeaderConnectionIDLength: 5).get()
        XCTAssertEqual(header.form, .short)
        XCTAssertNil(header.version)
        XCTAssertNil(header.sourceConnectionID)
        XCTAssertNil(header.longPacketType)
        XCTAssertEqual(header.destinationConnectionID, .of([7, 7, 7, 7, 7]))
        // A length ngtcp2 would assert on is refused before it is called.
        XCTAssertEqual(QUICPacketHeader.parse(datagram, shortHeaderConnectionIDLength: 21), .failure(.undecodable))
        XCTAssertEqual(QUICPacketHeader.parse(datagram, shortHeaderConnectionIDLength: -1), .failure(.undecodable))
    }

    func testLongPacketTypesOfV1() throws {
        let cases: [(UInt8, QUICPacketHeader.LongPacketType)] = [(0, .initial), (1, .zeroRTT), (2, .handshake)]
        for (type, expected) in cases {
            let datagram = ByteBuffer(bytes: QUICTestPackets.long(type: type))
            let header = try QUICPacketHeader.parse(datagram, shortHeaderConnectionIDLength: 18).get()
            XCTAssertEqual(header.longPacketType, expected)
            XCTAssertTrue(header.fixedBit)
        }
        let other = ByteBuffer(bytes: QUICTestPackets.long(version: 0x1a2a_3a4a))
        XCTAssertNil(try QUICPacketHeader.parse(other, shortHeaderConnectionIDLength: 18).get().longPacketType)
    }

    func testReservedVersions() {
        XCTAssertTrue(QUICVersion(rawValue: 0x1a2a_3a4a).isReserved)
        XCTAssertTrue(QUICVersion(rawValue: 0x0a0a_0a0a).isReserved)
        XCTAssertFalse(QUICVersion.v1.isReserved)
        XCTAssertEqual(QUICVersion.v1.description, "0x1")
    }
}
