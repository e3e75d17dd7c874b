import NIOCore

@testable import ALBQUIC

/// Hand-built QUIC packets for the triage tests: the header bytes of RFC 9000 section 17, padded with
/// zeros to a datagram size. Nothing here is encrypted; the triage never looks past the header.
enum QUICTestPackets {
    static let clientDCID: [UInt8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]  // RFC 9001 appendix A
    static let clientSCID: [UInt8] = [0x51, 0x52, 0x53, 0x54]
    static let serverCID: [UInt8] = Array(0xa0..<0xb2)  // 18 bytes, the length our listener issues

    static let longTypeInitial: UInt8 = 0
    static let longTypeZeroRTT: UInt8 = 1
    static let longTypeHandshake: UInt8 = 2

    /// A long header: form and fixed bits, the type, a one-byte packet number; then the version, both
    /// connection IDs, for an Initial the token, then a two-byte length covering the packet number and
    /// the zero padding up to `datagramSize`.
    static func long(version: UInt32 = 1, type: UInt8 = longTypeInitial, dcid: [UInt8] = clientDCID,
                     scid: [UInt8] = clientSCID, token: [UInt8] = [], tokenLengthOverride: [UInt8]? = nil,
                     fixedBit: Bool = true, datagramSize: Int = 1200) -> [UInt8] {
        var bytes: [UInt8] = [0x80 | (fixedBit ? 0x40 : 0) | (type << 4)]
        bytes += withUnsafeBytes(of: version.bigEndian) { Array($0) }
        bytes.append(UInt8(truncatingIfNeeded: dcid.count))
        bytes += dcid
        bytes.append(UInt8(truncatingIfNeeded: scid.count))
        bytes += scid
        if type == longTypeInitial && version == 1 {
            bytes += tokenLengthOverride ?? varint(token.count)
            bytes += token
        }
        let remaining = max(datagramSize - bytes.count - 2, 1)
        bytes += [0x40 | UInt8(truncatingIfNeeded: remaining >> 8), UInt8(truncatingIfNeeded: remaining)]
        bytes.append(0)  // packet number
        if bytes.count < datagramSize { bytes += [UInt8](repeating: 0, count: datagramSize - bytes.count) }
        return bytes
    }

    /// A short (1-RTT) header: form bit 0, fixed bit 1, then the destination connection ID and a payload.
    static func short(dcid: [UInt8] = serverCID, datagramSize: Int = 60) -> [UInt8] {
        var bytes: [UInt8] = [0x41]
        bytes += dcid
        if bytes.count < datagramSize { bytes += [UInt8](repeating: 0x5a, count: datagramSize - bytes.count) }
        return bytes
    }

    /// A QUIC variable-length integer (RFC 9000 section 16), one or two bytes.
    static func varint(_ value: Int) -> [UInt8] {
        value < 64 ? [UInt8(value)] : [0x40 | UInt8(value >> 8), UInt8(value & 0xff)]
    }
}

/// A deterministic generator (SplitMix64), so that every run of a randomized test sees the same inputs.
struct SeededGenerator: RandomNumberGenerator {
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

extension QUICConnectionID {
    /// Test shorthand: the bytes are always short enough.
    static func of(_ bytes: [UInt8]) -> QUICConnectionID {
        QUICConnectionID(bytes) ?? QUICConnectionID()
    }
}
