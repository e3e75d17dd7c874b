import Foundation

/// The messages of the takeover protocol (docs/takeover.md): one JSON object per `SOCK_SEQPACKET`
/// message, descriptors attached where noted. A pure value type: encoding and decoding only.
public enum TakeoverMessage: Equatable, Sendable {
    /// The protocol version this build speaks; a peer speaking another one is refused with ``abort(reason:)``.
    public static let version = 1

    /// One listening socket in a ``sockets(_:)`` message; its descriptor travels at the same index.
    public struct Socket: Codable, Equatable, Sendable {
        /// The listener that served it in the old process.
        public var listener: String
        /// "host:port" as configured (port 0 stays 0).
        public var address: String
        /// "host:port" it is bound to.
        public var boundAddress: String
        /// `true` for a QUIC listener's UDP socket; absent for a listening TCP socket (and in every message of
        /// a build before QUIC sockets were passed).
        public var datagram: Bool?

        public init(listener: String, address: String, boundAddress: String, datagram: Bool = false) {
            self.listener = listener
            self.address = address
            self.boundAddress = boundAddress
            self.datagram = datagram ? true : nil
        }
    }

    /// new -> old, first: who asks, in which protocol version, and whether it takes QUIC listeners' UDP
    /// sockets too (`"datagrams": true`; a build before that sends no such field and gets none, since it
    /// would take one for a listening socket).
    case hello(version: Int, pid: Int32, datagrams: Bool = false)
    /// old -> new, with the status directory's lock descriptor attached: the old process, its status
    /// directory (a real path), and how many sockets the ``sockets(_:)`` messages after it carry.
    case offer(version: Int, pid: Int32, statusDirectory: String, sockets: Int)
    /// old -> new, with one descriptor per entry attached, in order (several messages for many sockets).
    case sockets([Socket])
    /// new -> old: its first pass is done and it serves the sockets it wants; stop accepting and drain.
    case ready
    /// old -> new: stopped accepting; from now on the status directory and the sockets are the new one's.
    case done
    /// Either way: the takeover is off, and why; the old process keeps serving.
    case abort(reason: String)

    /// The short name of the message, as it appears in the `type` field and in logs.
    public var type: String {
        switch self {
        case .hello: "hello"
        case .offer: "offer"
        case .sockets: "sockets"
        case .ready: "ready"
        case .done: "done"
        case .abort: "abort"
        }
    }

    private struct Wire: Codable {
        var type: String
        var version: Int?
        var pid: Int32?
        var statusDirectory: String?
        var count: Int?
        var sockets: [Socket]?
        var reason: String?
        var datagrams: Bool?
    }

    public func encoded() -> [UInt8] {
        var wire = Wire(type: self.type)
        switch self {
        case .hello(let version, let pid, let datagrams):
            wire.version = version
            wire.pid = pid
            wire.datagrams = datagrams ? true : nil
        case .offer(let version, let pid, let statusDirectory, let count):
            wire.version = version
            wire.pid = pid
            wire.statusDirectory = statusDirectory
            wire.count = count
        case .sockets(let sockets):
            wire.sockets = sockets
        case .ready, .done:
            break
        case .abort(let reason):
            wire.reason = reason
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding strings and integers cannot fail; an empty message would be refused by the peer.
        return Array((try? encoder.encode(wire)) ?? Data())
    }

    /// - Throws: ``TakeoverProtocolError/malformed(_:)`` for anything but a well-formed message.
    public init(decoding bytes: [UInt8]) throws {
        let wire: Wire
        do {
            wire = try JSONDecoder().decode(Wire.self, from: Data(bytes))
        } catch {
            throw TakeoverProtocolError.malformed("not a takeover message (\(bytes.count) bytes)")
        }
        func field<T>(_ value: T?, _ name: String) throws -> T {
            guard let value else { throw TakeoverProtocolError.malformed("\(wire.type) without \(name)") }
            return value
        }
        switch wire.type {
        case "hello":
            self = .hello(version: try field(wire.version, "version"), pid: try field(wire.pid, "pid"),
                          datagrams: wire.datagrams ?? false)
        case "offer":
            let count = try field(wire.count, "count")
            guard count >= 0 else { throw TakeoverProtocolError.malformed("offer with a negative count") }
            self = .offer(version: try field(wire.version, "version"), pid: try field(wire.pid, "pid"),
                          statusDirectory: try field(wire.statusDirectory, "statusDirectory"), sockets: count)
        case "sockets":
            self = .sockets(try field(wire.sockets, "sockets"))
        case "ready":
            self = .ready
        case "done":
            self = .done
        case "abort":
            self = .abort(reason: wire.reason ?? "")
        default:
            throw TakeoverProtocolError.malformed("unknown message type \(wire.type)")
        }
    }
}

public enum TakeoverProtocolError: Error, CustomStringConvertible, Equatable {
    case malformed(String)
    /// A message other than the one the protocol expects at this step.
    case unexpected(expected: String, got: String)
    case version(Int)
    case aborted(String)

    public var description: String {
        switch self {
        case .malformed(let what): "malformed takeover message: \(what)"
        case .unexpected(let expected, let got): "expected \(expected), got \(got)"
        case .version(let version): "protocol version \(version) (this build speaks \(TakeoverMessage.version))"
        case .aborted(let reason): "the other process gave up: \(reason)"
        }
    }
}
