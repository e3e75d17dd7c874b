/// An IPv4 or IPv6 address, parsed without C calls.
public enum IPAddress: Hashable, Sendable {
    case v4(UInt32)
    case v6(high: UInt64, low: UInt64)

    /// Accepts `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`, `::ffff:1.2.3.4`. No zone IDs.
    public init?(_ text: Substring) {
        var text = text
        if text.first == "[" {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.first == ":", rest.dropFirst().allSatisfy(\.isASCIIDigit), rest.count > 1 else { return nil }
            }
            text = text[text.index(after: text.startIndex)..<close]
            guard let v6 = Self.parseV6(text) else { return nil }
            self = .v6(high: v6.0, low: v6.1)
            return
        }
        if let v4 = Self.parseV4(text) {
            self = .v4(v4)
            return
        }
        // "1.2.3.4:80": an IPv4 address with a port.
        if let colon = text.firstIndex(of: ":"), text[text.index(after: colon)...].allSatisfy(\.isASCIIDigit),
            text.filter({ $0 == ":" }).count == 1, let v4 = Self.parseV4(text[..<colon])
        {
            self = .v4(v4)
            return
        }
        guard let v6 = Self.parseV6(text) else { return nil }
        self = .v6(high: v6.0, low: v6.1)
    }

    public init?(_ text: String) {
        self.init(Substring(text))
    }

    static func parseV4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCIIDigit), let octet = UInt32(part),
                octet <= 255
            else { return nil }
            value = value << 8 | octet
        }
        return value
    }

    static func parseV6(_ text: Substring) -> (UInt64, UInt64)? {
        guard !text.isEmpty, text.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        let head: Substring
        let tail: Substring?
        if let gap = text.firstRange(of: "::") {
            head = text[..<gap.lowerBound]
            tail = text[gap.upperBound...]
            if tail?.firstRange(of: "::") != nil { return nil }
        } else {
            head = text
            tail = nil
        }
        func groups(_ part: Substring, allowV4: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if allowV4 && index == pieces.count - 1 && piece.contains(".") {
                    guard let v4 = parseV4(piece) else { return nil }
                    result.append(UInt16(v4 >> 16))
                    result.append(UInt16(v4 & 0xFFFF))
                } else {
                    guard !piece.isEmpty, piece.count <= 4, let group = UInt16(piece, radix: 16) else { return nil }
                    result.append(group)
                }
            }
            return result
        }
        guard let first = groups(head, allowV4: tail == nil) else { return nil }
        var all: [UInt16]
        if let tail {
            guard let second = groups(tail, allowV4: true), first.count + second.count <= 7 else { return nil }
            all = first + Array(repeating: 0, count: 8 - first.count - second.count) + second
        } else {
            guard first.count == 8 else { return nil }
            all = first
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for index in 0..<4 { high = high << 16 | UInt64(all[index]) }
        for index in 4..<8 { low = low << 16 | UInt64(all[index]) }
        return (high, low)
    }
}

/// An address range such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a single host.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int
    public let description: String

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let address = IPAddress(parts[0]) else { return nil }
        let maxPrefix: Int
        switch address {
        case .v4: maxPrefix = 32
        case .v6: maxPrefix = 128
        }
        if parts.count == 2 {
            guard parts[1].allSatisfy(\.isASCIIDigit), let prefix = Int(parts[1]), prefix <= maxPrefix else { return nil }
            self.prefixLength = prefix
        } else {
            self.prefixLength = maxPrefix
        }
        self.address = address
        self.description = text
    }

    public func contains(_ other: IPAddress) -> Bool {
        switch (self.address, other) {
        case (.v4(let network), .v4(let host)):
            if self.prefixLength == 0 { return true }
            let mask: UInt32 = self.prefixLength >= 32 ? .max : ~(UInt32.max >> UInt32(self.prefixLength))
            return network & mask == host & mask
        case (.v6(let networkHigh, let networkLow), .v6(let hostHigh, let hostLow)):
            let highBits = min(self.prefixLength, 64)
            let lowBits = max(self.prefixLength - 64, 0)
            let highMask: UInt64 = highBits == 0 ? 0 : (highBits >= 64 ? .max : ~(UInt64.max >> UInt64(highBits)))
            let lowMask: UInt64 = lowBits == 0 ? 0 : (lowBits >= 64 ? .max : ~(UInt64.max >> UInt64(lowBits)))
            return networkHigh & highMask == hostHigh & highMask && networkLow & lowMask == hostLow & lowMask
        default:
            return false
        }
    }

    /// `0.0.0.0/0` or `::/0`.
    public var matchesEverything: Bool { self.prefixLength == 0 }
}

/// Client IP retrieval from `X-Forwarded-For` (SPEC §4).
///
/// - With a trusted `0.0.0.0/0` (or `::/0`) the leftmost address is the client.
/// - Otherwise the list is scanned right to left and the first address that is not trusted is the
///   client; if every address is trusted, the leftmost one is.
/// - Without `X-Forwarded-For`, or when an entry that has to be examined is not an IP address, the
///   peer address is kept: garbage never becomes a client IP.
///
/// The peer itself is not required to be a trusted proxy (the spec does not ask for it).
/// What it does not do: `Forwarded` (RFC 7239) or `X-Real-IP`.
public struct ClientIPResolver: Sendable, Equatable {
    public let trustedProxies: [CIDR]
    private let trustEverything: Bool

    /// Returns nil when a CIDR does not parse.
    public init?(trustedProxies: [String]) {
        var parsed: [CIDR] = []
        for text in trustedProxies {
            guard let cidr = CIDR(text) else { return nil }
            parsed.append(cidr)
        }
        self.trustedProxies = parsed
        self.trustEverything = parsed.contains(where: \.matchesEverything)
    }

    /// Whether the TCP peer is one of the trusted proxies, whose `X-Forwarded-*` headers the proxy
    /// passes on (see ``ProxyHeaders/backendRequestHead(from:forwarding:options:)``).
    public func trusts(peer: String) -> Bool {
        guard let address = IPAddress(Substring(peer)) else { return false }
        return self.trustedProxies.contains { $0.contains(address) }
    }

    /// - Parameters:
    ///   - peer: the TCP peer's IP address as text.
    ///   - forwardedFor: every `X-Forwarded-For` field value, in order.
    public func resolve(peer: String, forwardedFor: [String]) -> String {
        var entries: [Substring] = []
        for value in forwardedFor {
            for element in value.split(separator: ",") {
                let trimmed = element.trimmingSpaces
                if !trimmed.isEmpty { entries.append(trimmed) }
            }
        }
        guard let leftmost = entries.first else { return peer }
        if self.trustEverything {
            return IPAddress(leftmost) != nil ? Self.hostPart(leftmost) : peer
        }
        for entry in entries.reversed() {
            guard let address = IPAddress(entry) else { return peer }
            if !self.trustedProxies.contains(where: { $0.contains(address) }) {
                return Self.hostPart(entry)
            }
        }
        return Self.hostPart(leftmost)
    }

    /// The address without brackets or port.
    static func hostPart(_ entry: Substring) -> String {
        if entry.first == "[", let close = entry.firstIndex(of: "]") {
            return String(entry[entry.index(after: entry.startIndex)..<close])
        }
        if entry.filter({ $0 == ":" }).count == 1, let colon = entry.firstIndex(of: ":") {
            return String(entry[..<colon])
        }
        return String(entry)
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { self >= "0" && self <= "9" }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result.removeFirst() }
        while let last = result.last, last == " " || last == "\t" { result.removeLast() }
        return result
    }
}
