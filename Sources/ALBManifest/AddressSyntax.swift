/// Syntax checks for addresses in manifests. Pure string checks: no resolution, no sockets.
enum AddressSyntax {
    static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        return parts.allSatisfy { part in
            !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isASCIIDigit)
                && (part.count == 1 || part.first != "0") && (Int(part) ?? 256) <= 255
        }
    }

    static func isIPv6(_ text: String) -> Bool {
        guard text.contains(":"), !text.contains(":::") else { return false }
        var body = Substring(text)
        var maxGroups = 8
        // An embedded IPv4 tail counts as two groups.
        if let lastColon = body.lastIndex(of: ":"), body[body.index(after: lastColon)...].contains(".") {
            guard isIPv4(String(body[body.index(after: lastColon)...])) else { return false }
            body = body[...lastColon]
            if body.hasSuffix("::") == false { body = body.dropLast() }
            maxGroups = 6
        }
        let halves = body.components(separatedBy: "::")
        guard halves.count <= 2 else { return false }
        func groups(_ half: String) -> [Substring]? {
            if half.isEmpty { return [] }
            let items = half.split(separator: ":", omittingEmptySubsequences: false)
            let valid = items.allSatisfy { !$0.isEmpty && $0.count <= 4 && $0.allSatisfy(\.isHexDigit) }
            return valid ? items : nil
        }
        guard let head = groups(halves[0]) else { return false }
        if halves.count == 2 {
            guard let tail = groups(halves[1]) else { return false }
            return head.count + tail.count < maxGroups
        }
        return head.count == maxGroups
    }

    static func isIP(_ text: String) -> Bool { isIPv4(text) || isIPv6(text) }

    /// An IP, or `IP/prefix` with a prefix length that fits the family.
    static func isIPOrCIDR(_ text: String) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 1 { return isIP(text) }
        guard parts.count == 2, parts[1].allSatisfy(\.isASCIIDigit), !parts[1].isEmpty, parts[1].count <= 3,
              let prefix = Int(parts[1]) else { return false }
        let address = String(parts[0])
        if isIPv4(address) { return prefix <= 32 }
        if isIPv6(address) { return prefix <= 128 }
        return false
    }

    /// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
    static func isHostname(_ text: String) -> Bool {
        var name = Substring(text)
        if name.hasSuffix(".") { name = name.dropLast() }
        guard !name.isEmpty, name.count <= 253 else { return false }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        // All-numeric dotted names are malformed IPv4 addresses, not host names.
        if labels.allSatisfy({ $0.allSatisfy(\.isASCIIDigit) }) { return false }
        return labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCIIAlphanumeric || $0 == "-" }
        }
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
    var isASCIIAlphanumeric: Bool { isASCII && (isLetter || isNumber) }
}
