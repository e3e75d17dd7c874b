import NIOHTTP1

/// Sticky sessions by an inserted cookie (`stickySession: {enabled: true, type: Insert}`): the first response
/// from a sticky group sets `ALB_STICKY`, whose value names the server that answered, and later requests
/// carrying it go to that server while it is in the group and in rotation. The value is an opaque hash of
/// the group's name and the server's address (not the address itself); a value that names no usable
/// server falls back to the scheduler and is issued again.
enum StickyCookie {
    static let name = "ALB_STICKY"

    /// The value naming `server` in `group`: 16 hex digits of a fixed 64-bit hash, the same across restarts
    /// and processes, so a reload or an upgrade keeps the sessions.
    static func value(group: String, server: BackendServer) -> String {
        let hash = SourceIPHash.splitMix64(SourceIPHash.fnv1a((group + "\u{0}" + server.address).utf8))
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The `Set-Cookie` field value for `value`, living `maxAge` seconds.
    static func setCookie(value: String, maxAge: Int) -> String {
        "\(Self.name)=\(value); Max-Age=\(maxAge); Path=/; HttpOnly"
    }

    /// The value of the first `ALB_STICKY` cookie in the request's `Cookie` fields, nil when there is none.
    static func value(in headers: HTTPHeaders) -> Substring? {
        for (name, field) in headers where name.utf8.count == 6 && name.lowercased() == "cookie" {
            for pair in field.split(separator: ";") {
                let trimmed = pair.drop { $0 == " " || $0 == "\t" }
                guard trimmed.hasPrefix(Self.name + "=") else { continue }
                return trimmed.dropFirst(Self.name.utf8.count + 1).prefix { $0 != " " && $0 != "\t" }
            }
        }
        return nil
    }
}
