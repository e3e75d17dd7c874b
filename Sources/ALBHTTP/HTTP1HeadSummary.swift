import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a strict decoder learnt of a head's fields while it read each field's bytes, handed over with the head
/// so the proxy does not search the fields again for every question it asks of them.
///
/// Why: the proxy asked of each backend response whether it keeps the connection (`Connection`), what frames
/// its body (`Content-Length`, `Transfer-Encoding`) and which hop-by-hop fields to drop, each a pass over the
/// head's `String`s; callgrind put those passes at about 5,000 instructions of a proxied request, 7%. Read from
/// the bytes as they are checked, the same answers cost a length compare for most fields.
public struct HTTP1HeadSummary: Sendable, Equatable {
    /// The fields the proxy treats specially (any case); the first seven are the hop-by-hop ones
    /// (``ProxyHeaders`` drops them, RFC 9110 section 7.6.1).
    public struct Names: OptionSet, Sendable, Hashable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        public static let connection = Names(rawValue: 1 << 0)
        public static let keepAlive = Names(rawValue: 1 << 1)
        public static let proxyConnection = Names(rawValue: 1 << 2)
        public static let te = Names(rawValue: 1 << 3)
        public static let trailer = Names(rawValue: 1 << 4)
        public static let upgrade = Names(rawValue: 1 << 5)
        public static let transferEncoding = Names(rawValue: 1 << 6)
        public static let contentLength = Names(rawValue: 1 << 7)
        /// A field named `Close` (reserved, RFC 9110 section 18.4): `Connection: close` names it too.
        public static let close = Names(rawValue: 1 << 8)
        public static let host = Names(rawValue: 1 << 9)
        public static let expect = Names(rawValue: 1 << 10)
        /// One of ``ProxyHeaders``' forwarding fields (`X-Forwarded-For`, `SLB-ID`, ...): a request's are passed
        /// on only from a trusted proxy.
        public static let forwarding = Names(rawValue: 1 << 11)

        public static let hopByHop: Names = [
            .connection, .keepAlive, .proxyConnection, .te, .trailer, .upgrade, .transferEncoding,
        ]

        /// Which of these `name` (a field name's bytes, any case) is, if any: its length picks at most two
        /// candidates, compared byte by byte only then.
        @inline(__always)
        static func of(_ name: UnsafeRawBufferPointer) -> Names? {
            switch name.count {
            case 2: return HTTP1Syntax.equalsIgnoringASCIICase(name, "te") ? .te : nil
            case 4: return HTTP1Syntax.equalsIgnoringASCIICase(name, "host") ? .host : nil
            case 5: return HTTP1Syntax.equalsIgnoringASCIICase(name, "close") ? .close : nil
            case 7:
                if HTTP1Syntax.equalsIgnoringASCIICase(name, "trailer") { return .trailer }
                return HTTP1Syntax.equalsIgnoringASCIICase(name, "upgrade") ? .upgrade : nil
            case 10:
                if HTTP1Syntax.equalsIgnoringASCIICase(name, "connection") { return .connection }
                return HTTP1Syntax.equalsIgnoringASCIICase(name, "keep-alive") ? .keepAlive : nil
            case 14: return HTTP1Syntax.equalsIgnoringASCIICase(name, "content-length") ? .contentLength : nil
            case 16: return HTTP1Syntax.equalsIgnoringASCIICase(name, "proxy-connection") ? .proxyConnection : nil
            case 17: return HTTP1Syntax.equalsIgnoringASCIICase(name, "transfer-encoding") ? .transferEncoding : nil
            default: return nil
            }
        }

        /// Which of the names only a request's fields are asked about `name` is: `Expect`, and the forwarding
        /// fields (`X-Forwarded-...`, `SLB-ID`). Apart from ``of(_:)``, so that a response's fields are not compared
        /// with them (in one switch, they also kept it from being inlined: about 250 instructions a request more).
        @inline(never)
        static func ofRequestOnly(_ name: UnsafeRawBufferPointer) -> Names? {
            switch name.count {
            case 6:
                if HTTP1Syntax.equalsIgnoringASCIICase(name, "expect") { return .expect }
                return HTTP1Syntax.equalsIgnoringASCIICase(name, "slb-id") ? .forwarding : nil
            case 15: return HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-for") ? .forwarding : nil
            case 16:
                return HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-port")
                    || HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-host") ? .forwarding : nil
            case 17: return HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-proto") ? .forwarding : nil
            case 26: return HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-client-srcport") ? .forwarding : nil
            case 31: return HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-clientcert-issuerdn") ? .forwarding : nil
            case 32: return HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-clientcert-subjectdn") ? .forwarding : nil
            case 34: return HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-clientcert-fingerprint") ? .forwarding : nil
            case 35: return HTTP1Syntax.equalsIgnoringASCIICase(name, "x-forwarded-clientcert-clientverify") ? .forwarding : nil
            default: return nil
            }
        }
    }

    /// What `Content-Length` and `Transfer-Encoding` said, for ``HTTP1BodyFraming/of(_:summary:)`` to judge.
    struct Framing: Equatable {
        var transferEncodings = 0
        /// The (last) `Transfer-Encoding` is exactly `chunked`, in any case.
        var isChunked = false
        var contentLengths = 0
        /// The last valid length read.
        var length: Int?
        var lengthsValid = true
        var lengthsDiffer = false
        /// Some `Content-Length` was a list (`5, 5`).
        var lengthIsList = false

        /// The lengths, if valid and equal, are folded into one field (``HTTP1BodyFraming/of(_:summary:)``).
        var foldsLengths: Bool { self.contentLengths > 1 || self.lengthIsList }

        mutating func readTransferEncoding(_ value: UnsafeRawBufferPointer) {
            self.transferEncodings += 1
            self.isChunked = HTTP1Syntax.equalsIgnoringASCIICase(value, "chunked")
        }

        mutating func readContentLength(_ value: UnsafeRawBufferPointer) {
            self.contentLengths += 1
            self.lengthIsList = self.lengthIsList || value.contains(UInt8(ascii: ","))
            guard let parsed = HTTP1Syntax.parseContentLength(value) else {
                self.lengthsValid = false
                return
            }
            if let seen = self.length, seen != parsed { self.lengthsDiffer = true }
            self.length = parsed
        }
    }

    var framing = Framing()

    /// Which of ``Names`` the head has.
    public internal(set) var present: Names = []
    /// How many `Host` fields it has.
    public internal(set) var hosts = 0
    /// What the `Connection` fields' `close` and `keep-alive` options settle, read as NIO's
    /// `HTTPHeaders.isKeepAlive(version:)` reads them: `close` anywhere closes, a `keep-alive` keeps unless
    /// more than one option was seen; nil when the fields list neither.
    public internal(set) var connectionKeepsAlive: Bool?
    /// `Connection` lists an option other than `close`, `keep-alive` and the hop-by-hop names.
    var connectionNamesOtherFields = false
    var connectionListsClose = false
    /// The decoder left the hop-by-hop fields out of the head it delivered (it was asked to, and could).
    public internal(set) var hopByHopLeftOut = false
    /// Bit i: the section's field i is hop-by-hop (fields from 32 on are not marked: see `positionsKnown`). 32 bits
    /// each, not 64: the summary is part of every connection's decoder, idle or not.
    private var hopByHopPositions: UInt32 = 0
    /// Bit i: the section's field i is a forwarding field (``Names/forwarding``), likewise.
    private var forwardingPositions: UInt32 = 0
    /// Whether `hopByHopPositions` marks every hop-by-hop field where it stands: false past 32 fields, or once
    /// the fields were rearranged (equal `Content-Length`s folded into one).
    var positionsKnown = true
    /// A request's head (``init(readsRequest:)``).
    private(set) var readsRequest = false

    /// `readsRequest`: the section is a request's head, whose fields are also looked at for
    /// ``Names/ofRequestOnly(_:)``.
    public init(readsRequest: Bool = false) {
        self.readsRequest = readsRequest
    }

    /// Some field `Connection` names, beyond the hop-by-hop ones, must be dropped as well: the slow way,
    /// ``ProxyHeaders/removeHopByHop(from:)``, finds which.
    public var connectionNamesMoreFields: Bool {
        self.connectionNamesOtherFields || (self.connectionListsClose && self.present.contains(.close))
    }

    /// Whether the sender keeps the connection open after this message: ``ProxyHeaders/isKeepAlive(_:)``'s
    /// answer, without a pass over the fields.
    public func isKeepAlive(version: HTTPVersion) -> Bool {
        self.connectionKeepsAlive ?? (version.major == 1 && version.minor >= 1)
    }

    /// Takes in the section's field number `position`, its name's bytes and its value's. Inlined in the field
    /// parse with ``Names/of(_:)``: as two calls a field they cost about 55 instructions a field more (callgrind).
    /// Throws when a request's `Host` is not of ``HostSyntax``'s form.
    @inline(__always)
    mutating func read(position: Int, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
        guard let known = Names.of(name) ?? (self.readsRequest ? Names.ofRequestOnly(name) : nil) else { return }
        self.present.insert(known)
        switch known {
        case .connection: self.readConnection(value)
        case .host:
            self.hosts += 1
            if self.readsRequest, !HostSyntax.isValid(value) { throw HTTP1SyntaxError.malformed("invalid Host") }
        case .contentLength: self.framing.readContentLength(value)
        case .transferEncoding: self.framing.readTransferEncoding(value)
        default: break
        }
        if Names.hopByHop.contains(known) {
            if position < 32 {
                self.hopByHopPositions |= 1 << UInt32(position)
            } else {
                self.positionsKnown = false
            }
        } else if known == .forwarding {
            if position < 32 {
                self.forwardingPositions |= 1 << UInt32(position)
            } else {
                self.positionsKnown = false
            }
        }
    }

    /// Leaves the hop-by-hop fields out of `fields` (the section's fields, as read) when that is all
    /// ``ProxyHeaders/removeHopByHop(from:)`` would take out: by position, without comparing a name.
    mutating func leaveOutHopByHop(from fields: inout [(String, String)]) {
        guard self.canLeaveOutHopByHop else { return }
        var positions = self.hopByHopPositions
        while positions != 0 {
            let last = 31 - positions.leadingZeroBitCount
            fields.remove(at: last)
            positions &= ~(1 << UInt32(last))
        }
        self.hopByHopPositions = 0
        self.hopByHopLeftOut = true
    }

    /// The hop-by-hop fields can be left out by their positions: all of them are marked, and `Connection` names
    /// no other field.
    var canLeaveOutHopByHop: Bool { self.positionsKnown && !self.connectionNamesMoreFields }

    /// As ``leaveOutHopByHop(from:)-([(String,String)])``, from a head's lines; nothing is left out when the
    /// positions cannot tell (the caller, which relays lines only when ``canLeaveOutHopByHop``, has the fields
    /// searched then).
    mutating func leaveOutHopByHop(from lines: inout HTTP1FieldLines) {
        guard let positions = self.positionsLeftOut(forwarding: false) else { return }
        lines.leaveOut(positions: positions)
        self.hopByHopPositions = 0
        self.hopByHopLeftOut = true
    }

    /// The positions (bit i: field i) of the hop-by-hop fields, and of the forwarding ones too when `forwarding`
    /// (what a request's fields lose on their way to a backend when its client is not a trusted proxy); nil when
    /// the positions cannot tell (``canLeaveOutHopByHop``).
    func positionsLeftOut(forwarding: Bool) -> UInt64? {
        guard self.canLeaveOutHopByHop else { return nil }
        return UInt64(self.hopByHopPositions | (forwarding ? self.forwardingPositions : 0))
    }

    /// Takes in a `Connection` field's value (trimmed, as a parsed field's is): each comma-separated option,
    /// trimmed.
    private mutating func readConnection(_ value: UnsafeRawBufferPointer) {
        // Nearly every value is one option (`keep-alive`, `close`): taken whole, where the split below cost
        // about 140 instructions for `keep-alive` (callgrind).
        guard let base = value.baseAddress, value.count > 0 else { return }
        if memchr(base, Int32(UInt8(ascii: ",")), value.count) == nil {
            self.readConnectionOption(value)
            return
        }
        var start = 0
        while start <= value.count {
            var end = start
            while end < value.count, value[end] != UInt8(ascii: ",") { end += 1 }
            let option = HTTP1Syntax.withoutWhitespace(value, start, end)
            if !option.isEmpty {
                self.readConnectionOption(UnsafeRawBufferPointer(rebasing: value[option]))
            }
            start = end + 1
        }
    }

    private mutating func readConnectionOption(_ option: UnsafeRawBufferPointer) {
        if HTTP1Syntax.equalsIgnoringASCIICase(option, "close") {
            self.connectionKeepsAlive = false
            self.connectionListsClose = true
        } else if HTTP1Syntax.equalsIgnoringASCIICase(option, "keep-alive") {
            self.connectionKeepsAlive = self.connectionKeepsAlive == nil
        } else if Names.of(option).map({ Names.hopByHop.contains($0) }) != true {
            self.connectionNamesOtherFields = true
        }
    }
}
