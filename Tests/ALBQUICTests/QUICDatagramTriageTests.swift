import NIOCore
import XCTest

@testable import ALBQUIC

final class QUICDatagramTriageTests: XCTestCase {
    private typealias P = QUICTestPackets
    private let allocator = ByteBufferAllocator()

    private func classifier() throws -> QUICDatagramClassifier {
        try XCTUnwrap(QUICDatagramClassifier(connectionIDLength: P.serverCID.count))
    }

    private func triage(_ bytes: [UInt8], known: Set<QUICConnectionID> = [], seed: UInt64 = 1) throws
        -> QUICDatagramTriage
    {
        var random = SeededGenerator(seed: seed)
        return try classifier().triage(ByteBuffer(bytes: bytes), isKnownConnection: { known.contains($0) },
                                       random: &random, allocator: allocator)
    }

    // MARK: New connections

    func testAV1InitialOfTwelveHundredBytesOpensAConnection() throws {
        let result = try triage(P.long())
        guard case .newConnection(let initial) = result else { return XCTFail("\(result)") }
        XCTAssertEqual(initial.header.form, .long)
        XCTAssertEqual(initial.header.version, .v1)
        XCTAssertEqual(initial.header.longPacketType, .initial)
        XCTAssertEqual(initial.header.destinationConnectionID, .of(P.clientDCID))
        XCTAssertEqual(initial.header.sourceConnectionID, .of(P.clientSCID))
        XCTAssertEqual(initial.token, .none)
    }

    func testAnInitialUnderTwelveHundredBytesIsDropped() throws {
        XCTAssertEqual(try triage(P.long(datagramSize: 1199)), .drop(.initialTooSmall))
        XCTAssertEqual(try triage(P.long(datagramSize: 100)), .drop(.initialTooSmall))
    }

    func testTheTokenIsClassifiedByItsMagicByte() throws {
        let retry: [UInt8] = [0xb6] + Array(repeating: 7, count: 40)
        let regular: [UInt8] = [0x36, 1, 2, 3]
        let foreign: [UInt8] = [0x99]
        for (token, expected) in [(retry, QUICInitialPacket.Token.retry(retry)), (regular, .regular(regular)),
                                  (foreign, .unrecognized(foreign))] {
            let result = try triage(P.long(token: token))
            guard case .newConnection(let initial) = result else { return XCTFail("\(result)") }
            XCTAssertEqual(initial.token, expected)
        }
    }

    func testAShortDestinationIDNeedsAToken() throws {
        let short: [UInt8] = [1, 2, 3, 4, 5, 6, 7]
        XCTAssertEqual(try triage(P.long(dcid: short)), .drop(.initialConnectionIDTooShort))
        // After a Retry the client's destination ID is the one the server chose, of any length.
        guard case .newConnection = try triage(P.long(dcid: short, token: [0xb6, 1, 2])) else {
            return XCTFail("an Initial with a token and a short ID")
        }
    }

    func testAnInitialWithTheFixedBitClearIsDropped() throws {
        XCTAssertEqual(try triage(P.long(fixedBit: false)), .drop(.fixedBitClear))
    }

    func testAnInitialWhoseTokenRunsPastTheDatagramIsDropped() throws {
        // A four-byte varint token length of 4096 in a 1200-byte datagram.
        XCTAssertEqual(try triage(P.long(tokenLengthOverride: [0x80, 0x00, 0x10, 0x00])), .drop(.malformedInitial))
    }

    func testOtherLongPacketsForNoConnectionAreDropped() throws {
        XCTAssertEqual(try triage(P.long(type: P.longTypeHandshake)), .drop(.unknownConnection))
        XCTAssertEqual(try triage(P.long(type: P.longTypeZeroRTT)), .drop(.unknownConnection))
    }

    // MARK: Routing

    func testLongAndShortHeadersForAKnownConnectionAreRouted() throws {
        let client = QUICConnectionID.of(P.clientDCID)
        let server = QUICConnectionID.of(P.serverCID)
        let known: Set = [client, server]
        XCTAssertEqual(try triage(P.long(), known: known), .route(client))
        XCTAssertEqual(try triage(P.long(datagramSize: 300), known: known), .route(client))
        XCTAssertEqual(try triage(P.long(type: P.longTypeHandshake, dcid: P.serverCID), known: known),
                       .route(server))
        XCTAssertEqual(try triage(P.short(), known: known), .route(server))
    }

    func testAShortHeaderReadsOurConnectionIDLength() throws {
        // Bytes after the ID's 18 do not belong to it.
        let result = try triage(P.short(dcid: P.serverCID + [0xff, 0xfe]), known: [.of(P.serverCID)])
        XCTAssertEqual(result, .route(.of(P.serverCID)))
    }

    func testAShortHeaderForNoConnectionIsDropped() throws {
        XCTAssertEqual(try triage(P.short()), .drop(.unknownConnection))
    }

    func testAShortHeaderShorterThanOurIDIsUndecodable() throws {
        XCTAssertEqual(try triage(Array(P.short().prefix(P.serverCID.count))), .drop(.undecodableHeader))
    }

    // MARK: Versions

    func testAnUnknownVersionInTwelveHundredBytesGetsVersionNegotiation() throws {
        let datagram = P.long(version: 0x1a2a_3a4a)
        let result = try triage(datagram, known: [.of(P.clientDCID)])
        guard case .sendVersionNegotiation(let packet) = result else { return XCTFail("\(result)") }
        let parsed = try VersionNegotiationPacket(packet)
        XCTAssertEqual(parsed.destinationID, P.clientSCID, "echoes the client's source ID")
        XCTAssertEqual(parsed.sourceID, P.clientDCID, "echoes the client's destination ID")
        XCTAssertEqual(parsed.versions.first, 1)
        XCTAssertEqual(parsed.versions.count, 2)
        XCTAssertTrue(parsed.versions.dropFirst().allSatisfy { QUICVersion(rawValue: $0).isReserved })
        XCTAssertLessThan(packet.readableBytes, datagram.count, "no amplification")
    }

    func testVersionNegotiationEchoesConnectionIDsLongerThanV1Allows() throws {
        let dcid = [UInt8](repeating: 0xdd, count: 255)
        let scid = [UInt8](repeating: 0x55, count: 21)
        let result = try triage(P.long(version: 0xface_b00c, dcid: dcid, scid: scid))
        guard case .sendVersionNegotiation(let packet) = result else { return XCTFail("\(result)") }
        let parsed = try VersionNegotiationPacket(packet)
        XCTAssertEqual(parsed.destinationID, scid)
        XCTAssertEqual(parsed.sourceID, dcid)
    }

    func testAnUnknownVersionUnderTwelveHundredBytesIsDropped() throws {
        // ngtcp2 refuses to decode it (too small to answer).
        XCTAssertEqual(try triage(P.long(version: 0x1a2a_3a4a, datagramSize: 1199)), .drop(.undecodableHeader))
        // A draft version ngtcp2 knows but this listener does not serve.
        XCTAssertEqual(try triage(P.long(version: 0xff00_001d, datagramSize: 1199)),
                       .drop(.unsupportedVersionTooSmall))
        guard case .sendVersionNegotiation = try triage(P.long(version: 0xff00_001d)) else {
            return XCTFail("draft-29 in 1200 bytes gets Version Negotiation")
        }
    }

    func testAVersionNegotiationPacketIsDropped() throws {
        XCTAssertEqual(try triage(P.long(version: 0), known: [.of(P.clientDCID)]), .drop(.versionNegotiationPacket))
    }

    func testAV1HeaderWithAConnectionIDOverTwentyBytesIsUndecodable() throws {
        XCTAssertEqual(try triage(P.long(dcid: Array(repeating: 1, count: 21))), .drop(.undecodableHeader))
    }

    // MARK: Hostile input

    func testAnEmptyDatagramIsDropped() throws {
        XCTAssertEqual(try triage([]), .drop(.empty))
    }

    /// Every prefix of a valid Initial (and of an unknown-version header) is dropped, never opens a
    /// connection, and never traps.
    func testEveryTruncationOfAValidHeaderIsDropped() throws {
        let initial = P.long(token: [0xb6, 1, 2, 3])
        let headerLength = 1 + 4 + 1 + P.clientDCID.count + 1 + P.clientSCID.count + 1 + 4 + 2
        for length in 0..<initial.count {
            let result = try triage(Array(initial.prefix(length)))
            switch length {
            case 0: XCTAssertEqual(result, .drop(.empty))
            case ..<(1 + 4 + 1 + P.clientDCID.count + 1 + P.clientSCID.count):
                XCTAssertEqual(result, .drop(.undecodableHeader), "prefix of \(length) bytes")
            default:
                XCTAssertEqual(result, .drop(.initialTooSmall), "prefix of \(length) bytes")
            }
            if length >= headerLength { XCTAssertNotEqual(result, .drop(.undecodableHeader)) }
        }
        let unknown = P.long(version: 0x5a6a_7a8a)
        for length in 0..<unknown.count {
            guard case .drop = try triage(Array(unknown.prefix(length))) else {
                return XCTFail("a \(length)-byte prefix of an unknown version was answered")
            }
        }
    }

    /// Random datagrams (a seeded generator: the same inputs every run) never trap, and what they get
    /// holds the triage's promises.
    func testRandomDatagramsKeepTheTriagesPromises() throws {
        var generator = SeededGenerator(seed: 0x5eed)
        let classifier = try classifier()
        var outcomes: [String: Int] = [:]
        let firstBytes: [UInt8] = [0xc0, 0xd0, 0xe0, 0x80, 0x40]
        let versions: [[UInt8]] = [[0, 0, 0, 1], [0, 0, 0, 0], [0xff, 0, 0, 0x1d], [0x1a, 0x2a, 0x3a, 0x4a]]
        for round in 0..<10_000 {
            let size = Int.random(in: 0...1500, using: &generator)
            var bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Steer a share of them at the interesting first bytes and versions.
            if size >= 5, round % 4 == 0 {
                bytes[0] = firstBytes[round / 4 % firstBytes.count]
                bytes.replaceSubrange(1...4, with: versions[round / 4 % versions.count])
                if size >= 6 { bytes[5] = UInt8.random(in: 0...24, using: &generator) }
            }
            var random = SeededGenerator(seed: UInt64(round))
            let result = classifier.triage(ByteBuffer(bytes: bytes), isKnownConnection: { $0.count == 3 },
                                           random: &random, allocator: allocator)
            switch result {
            case .drop(let reason):
                outcomes["drop \(reason)", default: 0] += 1
            case .route(let id):
                XCTAssertEqual(id.count, 3)
                outcomes["route", default: 0] += 1
            case .sendVersionNegotiation(let packet):
                XCTAssertGreaterThanOrEqual(size, 1200)
                XCTAssertLessThan(packet.readableBytes, size)
                XCTAssertNotEqual(Array(bytes[1...4]), [0, 0, 0, 1])
                XCTAssertNoThrow(try VersionNegotiationPacket(packet))
                outcomes["version negotiation", default: 0] += 1
            case .newConnection(let initial):
                XCTAssertGreaterThanOrEqual(size, 1200)
                XCTAssertEqual(initial.header.version, .v1)
                XCTAssertEqual(initial.header.longPacketType, .initial)
                outcomes["new connection", default: 0] += 1
            }
        }
        XCTAssertGreaterThan(outcomes["version negotiation"] ?? 0, 0, "\(outcomes)")
        XCTAssertGreaterThan(outcomes["new connection"] ?? 0, 0, "\(outcomes)")
    }

    func testTheClassifierRefusesConnectionIDLengthsQUICCannotUse() {
        XCTAssertNil(QUICDatagramClassifier(connectionIDLength: 0))
        XCTAssertNil(QUICDatagramClassifier(connectionIDLength: 21))
        XCTAssertNotNil(QUICDatagramClassifier(connectionIDLength: 20))
    }
}

/// A Version Negotiation packet read back (RFC 8999 section 6), to check what the triage built.
struct VersionNegotiationPacket {
    struct Malformed: Error {}
    var destinationID: [UInt8]
    var sourceID: [UInt8]
    var versions: [UInt32]

    init(_ packet: ByteBuffer) throws {
        var buffer = packet
        guard let first = buffer.readInteger(as: UInt8.self), first & 0x80 != 0,
              buffer.readInteger(as: UInt32.self) == 0,
              let dcidLength = buffer.readInteger(as: UInt8.self),
              let dcid = buffer.readBytes(length: Int(dcidLength)),
              let scidLength = buffer.readInteger(as: UInt8.self),
              let scid = buffer.readBytes(length: Int(scidLength)),
              buffer.readableBytes > 0, buffer.readableBytes % 4 == 0
        else { throw Malformed() }
        destinationID = dcid
        sourceID = scid
        versions = []
        while let version = buffer.readInteger(as: UInt32.self) { versions.append(version) }
    }
}
