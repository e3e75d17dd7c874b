import Atomics
import Dispatch
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One access log line (SPEC §1).
public struct AccessLogRecord: Sendable, Equatable {
    /// Seconds since 1970 (UTC) when the request arrived.
    public var time: Double
    public var listener: String
    public var `protocol`: String
    public var clientIP: String
    public var clientPort: Int
    public var method: String
    public var host: String
    public var path: String
    public var status: Int
    /// Request line, headers (as forwarded by the client) and body bytes.
    public var requestBytes: Int
    /// Response body bytes sent to the client (nginx's `body_bytes_sent`).
    public var responseBytes: Int
    /// "ip:port" of the backend, or "" when none was picked.
    public var upstream: String
    public var upstreamStatus: Int?
    public var durationMs: Double
    public var tlsVersion: String
    public var tlsCipher: String
    public var sni: String
    /// Why the backend side failed ("connect refused", "closed mid-response", ...; ``UpstreamError``), or "".
    public var upstreamError: String

    public init(
        time: Double, listener: String, protocol: String = "HTTP/1.1", clientIP: String, clientPort: Int,
        method: String, host: String, path: String, status: Int, requestBytes: Int, responseBytes: Int,
        upstream: String, upstreamStatus: Int?, durationMs: Double,
        tlsVersion: String = "", tlsCipher: String = "", sni: String = "", upstreamError: String = ""
    ) {
        self.time = time
        self.listener = listener
        self.protocol = `protocol`
        self.clientIP = clientIP
        self.clientPort = clientPort
        self.method = method
        self.host = host
        self.path = path
        self.status = status
        self.requestBytes = requestBytes
        self.responseBytes = responseBytes
        self.upstream = upstream
        self.upstreamStatus = upstreamStatus
        self.durationMs = durationMs
        self.tlsVersion = tlsVersion
        self.tlsCipher = tlsCipher
        self.sni = sni
        self.upstreamError = upstreamError
    }

    /// One JSON object, keys in SPEC §1 order; `time` is RFC 3339 UTC with milliseconds;
    /// `upstream_status` is null when no backend answered.
    public var json: String {
        var out = "{"
        out += "\"time\":" + Self.quote(Self.rfc3339(self.time))
        out += ",\"listener\":" + Self.quote(self.listener)
        out += ",\"protocol\":" + Self.quote(self.protocol)
        out += ",\"client_ip\":" + Self.quote(self.clientIP)
        out += ",\"client_port\":\(self.clientPort)"
        out += ",\"method\":" + Self.quote(self.method)
        out += ",\"host\":" + Self.quote(self.host)
        out += ",\"path\":" + Self.quote(self.path)
        out += ",\"status\":\(self.status)"
        out += ",\"request_bytes\":\(self.requestBytes)"
        out += ",\"response_bytes\":\(self.responseBytes)"
        out += ",\"upstream\":" + Self.quote(self.upstream)
        out += ",\"upstream_status\":" + (self.upstreamStatus.map { String($0) } ?? "null")
        let milliseconds = (self.durationMs * 1000).rounded() / 1000
        out += ",\"duration_ms\":\(milliseconds)"
        out += ",\"tls_version\":" + Self.quote(self.tlsVersion)
        out += ",\"tls_cipher\":" + Self.quote(self.tlsCipher)
        out += ",\"sni\":" + Self.quote(self.sni)
        out += ",\"upstream_error\":" + Self.quote(self.upstreamError)
        out += "}"
        return out
    }

    static func quote(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// `2026-01-02T03:04:05.678Z`, computed without Foundation or locale (Hinnant's civil-from-days).
    static func rfc3339(_ seconds: Double) -> String {
        let totalMillis = Int64((seconds * 1000).rounded(.down))
        let millis = Int(((totalMillis % 1000) + 1000) % 1000)
        let secs = (totalMillis - Int64(millis)) / 1000
        var days = secs / 86400
        var rem = secs % 86400
        if rem < 0 {
            rem += 86400
            days -= 1
        }
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(rem / 3600, 2)):\(pad(rem % 3600 / 60, 2)):"
            + "\(pad(rem % 60, 2)).\(pad(Int64(millis), 3))Z"
    }
}

/// Appends JSON lines to a file.
///
/// Event loops never touch the file: each listener keeps a buffer per event loop
/// (``AccessLogBuffer``) that hands whole batches to this object, which writes them on its own serial
/// queue. A batch goes out when it passes 32 KiB or 200 ms after its first line, and on stop/shutdown.
public final class AccessLog: Sendable {
    private let path: String
    /// The open file; replaced (on the queue) by ``reopen()``.
    private let fd: ManagedAtomic<Int32>
    private let queue = DispatchQueue(label: "albatross.access-log")
    /// Set (on the queue) by `close()`; later batches are dropped, and the descriptor is closed once.
    private let isClosed = ManagedAtomic<Bool>(false)

    /// Opens (creating, appending) the file.
    public init(path: String) throws {
        self.path = path
        self.fd = ManagedAtomic(try Self.open(path))
    }

    private static func open(_ path: String) throws -> Int32 {
        let fd = Glibc_open(path)
        guard fd >= 0 else {
            throw IOError(errnoCode: errno, reason: "open(\(path))")
        }
        return fd
    }

    /// Opens the path again, after the lines queued so far went to the file it had (`logrotate` moved it away:
    /// SIGUSR1, as for nginx). If the path cannot be opened, the lines go on to the old file.
    public func reopen() throws {
        try self.queue.sync {
            guard !self.isClosed.load(ordering: .acquiring) else { return }
            let fresh = try Self.open(self.path)
            _ = closeFile(self.fd.exchange(fresh, ordering: .acquiringAndReleasing))
        }
    }

    /// Queues a batch of complete lines.
    func write(_ bytes: [UInt8]) {
        self.queue.async {
            guard !self.isClosed.load(ordering: .acquiring) else { return }
            let fd = self.fd.load(ordering: .acquiring)
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let written = Glibc_write(fd, raw.baseAddress.map { $0 + offset }, raw.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        return
                    }
                    offset += written
                }
            }
        }
    }

    /// Waits until every queued batch is written.
    public func flush() {
        self.queue.sync {}
    }

    /// Flushes, then closes the file. Lines handed over later are dropped.
    public func close() {
        self.queue.sync {
            if !self.isClosed.exchange(true, ordering: .acquiringAndReleasing) {
                _ = closeFile(self.fd.load(ordering: .acquiring))
            }
        }
    }

    deinit {
        if !self.isClosed.load(ordering: .acquiring) {
            _ = closeFile(self.fd.load(ordering: .acquiring))
        }
    }
}

private func Glibc_open(_ path: String) -> Int32 {
    #if canImport(Darwin)
    return Darwin.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    #else
    return Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    #endif
}

private func Glibc_write(_ fd: Int32, _ pointer: UnsafeRawPointer?, _ count: Int) -> Int {
    #if canImport(Darwin)
    return Darwin.write(fd, pointer, count)
    #else
    return Glibc.write(fd, pointer, count)
    #endif
}

private func closeFile(_ fd: Int32) -> Int32 {
    #if canImport(Darwin)
    return Darwin.close(fd)
    #else
    return Glibc.close(fd)
    #endif
}

/// One listener's access log lines on one event loop, batched. Not thread-safe: used on its loop only.
final class AccessLogBuffer {
    private let log: AccessLog
    private let eventLoop: EventLoop
    private var pending: [UInt8] = []
    private var flushScheduled = false

    init(log: AccessLog, eventLoop: EventLoop) {
        self.log = log
        self.eventLoop = eventLoop
    }

    func append(_ record: AccessLogRecord) {
        self.pending.append(contentsOf: record.json.utf8)
        self.pending.append(UInt8(ascii: "\n"))
        if self.pending.count >= 32 * 1024 {
            self.flush()
        } else if !self.flushScheduled {
            self.flushScheduled = true
            self.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(200)) {
                self.flushScheduled = false
                self.flush()
            }
        }
    }

    func flush() {
        guard !self.pending.isEmpty else { return }
        self.log.write(self.pending)
        self.pending.removeAll(keepingCapacity: true)
    }
}

@available(*, unavailable)
extension AccessLogBuffer: Sendable {}
