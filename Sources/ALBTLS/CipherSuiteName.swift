import NIOCore

/// The OpenSSL name of a negotiated cipher suite, as nginx's `$ssl_cipher` and HAProxy's `%sslc` log it
/// ("ECDHE-RSA-AES128-GCM-SHA256", and the RFC 8446 names for TLS 1.3). Covers every suite a security
/// policy can allow (docs/tls.md); anything else is logged by its number ("0x00FF").
public enum CipherSuiteName {
    private static let names: [UInt16: String] = [
        0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384", 0x1303: "TLS_CHACHA20_POLY1305_SHA256",
        0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
        0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384", 0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
        0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305", 0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305",
        0xC023: "ECDHE-ECDSA-AES128-SHA256", 0xC027: "ECDHE-RSA-AES128-SHA256",
        0xC024: "ECDHE-ECDSA-AES256-SHA384", 0xC028: "ECDHE-RSA-AES256-SHA384",
        0xC009: "ECDHE-ECDSA-AES128-SHA", 0xC013: "ECDHE-RSA-AES128-SHA",
        0xC00A: "ECDHE-ECDSA-AES256-SHA", 0xC014: "ECDHE-RSA-AES256-SHA",
        0x009C: "AES128-GCM-SHA256", 0x009D: "AES256-GCM-SHA384", 0x003C: "AES128-SHA256", 0x003D: "AES256-SHA256",
        0x002F: "AES128-SHA", 0x0035: "AES256-SHA", 0x000A: "DES-CBC3-SHA",
    ]

    public static func of(_ id: UInt16) -> String {
        if let name = Self.names[id] { return name }
        let hex = String(id, radix: 16, uppercase: true)
        return "0x" + String(repeating: "0", count: 4 - hex.count) + hex
    }

    /// The cipher suite a ServerHello chose, read from the first TLS record the server sends (plaintext in
    /// every TLS version): nil if `record` does not start with a complete enough ServerHello.
    public static func chosenBy(serverHelloRecord record: ByteBuffer) -> UInt16? {
        // record header (type 22, version, length: 5 bytes), handshake header (type 2, length: 4 bytes),
        // legacy_version (2), random (32), session id length (1) and id, then the cipher suite (2).
        let start = record.readerIndex
        guard record.getInteger(at: start, as: UInt8.self) == 22, record.getInteger(at: start + 5, as: UInt8.self) == 2,
              let sessionIDLength = record.getInteger(at: start + 43, as: UInt8.self)
        else { return nil }
        return record.getInteger(at: start + 44 + Int(sessionIDLength), as: UInt16.self)
    }
}
