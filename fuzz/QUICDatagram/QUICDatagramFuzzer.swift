import ALBQUIC
import NIOCore

/// One fuzz input: the bytes as one UDP datagram at a QUIC listener's entry point, triaged twice (with the
/// 18-byte connection IDs the listener will issue, and with 8-byte ones) against a connection table that
/// knows two IDs. A crash or trap is the finding; beyond that, each decision must keep the triage's
/// promises: Version Negotiation only for another version in at least 1200 bytes, no larger than the
/// datagram and echoing its IDs; a new connection only for a v1 Initial of at least 1200 bytes; routing
/// only to a known ID.
func checkQUICDatagram(_ bytes: UnsafeRawBufferPointer) {
    let datagram = ByteBuffer(bytes: bytes)
    let known: Set<QUICConnectionID> = [
        QUICConnectionID(Array(0xa0..<0xb2)) ?? QUICConnectionID(),  // the seeds' server ID (18 bytes)
        QUICConnectionID([0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]) ?? QUICConnectionID(),  // RFC 9001's
    ]
    for length in [18, 8] {
        guard let classifier = QUICDatagramClassifier(connectionIDLength: length) else {
            fatalError("connection ID length \(length) refused")
        }
        var random = FuzzGenerator(seed: UInt64(bytes.count))
        let result = classifier.triage(datagram, isKnownConnection: { known.contains($0) }, random: &random,
                                       allocator: ByteBufferAllocator())
        check(result, datagram: datagram, known: known, connectionIDLength: length)
    }
}

private func check(_ result: QUICDatagramTriage, datagram: ByteBuffer, known: Set<QUICConnectionID>,
                   connectionIDLength: Int) {
    let header = try? QUICPacketHeader.parse(datagram, shortHeaderConnectionIDLength: connectionIDLength).get()
    switch result {
    case .drop(.empty):
        if datagram.readableBytes != 0 { fatalError("a \(datagram.readableBytes)-byte datagram called empty") }
    case .drop(.undecodableHeader):
        if header != nil { fatalError("a decodable header dropped as undecodable") }
    case .drop:
        if header == nil { fatalError("an undecodable header dropped for another reason") }
    case .route(let id):
        if !known.contains(id) || header?.destinationConnectionID != id { fatalError("routed to \(id)") }
    case .sendVersionNegotiation(let packet):
        guard let header, let version = header.version, version != .v1, version != .negotiation,
              datagram.readableBytes >= QUICDatagramClassifier.minimumInitialDatagramSize,
              packet.readableBytes < datagram.readableBytes
        else { fatalError("Version Negotiation for \(String(describing: header))") }
        var reader = packet
        let echoedDestinationLength = reader.getInteger(at: reader.readerIndex + 5, as: UInt8.self)
        if reader.readInteger(as: UInt8.self).map({ $0 & 0x80 }) != 0x80 || reader.readInteger(as: UInt32.self) != 0
            || echoedDestinationLength.map(Int.init) != header.sourceConnectionID?.count
        {
            fatalError("a malformed Version Negotiation packet")
        }
    case .newConnection(let initial):
        if initial.header.version != .v1 || initial.header.longPacketType != .initial
            || datagram.readableBytes < QUICDatagramClassifier.minimumInitialDatagramSize
            || initial.header != header
        {
            fatalError("a new connection for \(initial.header)")
        }
    }
}

/// SplitMix64, seeded from the input so that a crasher replays exactly.
struct FuzzGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

#if ALB_LIBFUZZER
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    checkQUICDatagram(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
#else
import FuzzReplay

@main
enum QUICDatagramReplay {
    static func main() { replayInputs(checkQUICDatagram) }
}
#endif
