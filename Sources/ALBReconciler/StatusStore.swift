import ALBManifest
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// Owns the status directory: one YAML file per resource, replaced atomically, and `events.log`.
///
/// Writes are skipped when the bytes would not change, so an idle reconciler does not touch the disk.
public final class StatusStore: @unchecked Sendable {
    // @unchecked: used only from the reconciler's single task (see Reconciler); never shared across tasks.
    public let directory: FilePath
    /// What is on disk, as value and as text: an unchanged status is not even serialised again.
    private var written: [ResourceID: (status: ResourceStatus, text: String)] = [:]
    private var eventsHandle: FileHandle?
    /// `events.log` lines not written yet (``flushEvents()``).
    private var pendingEvents: [UInt8] = []
    private var lastEventTime = Date.distantPast
    /// Folders known to exist, so a write does not ask the file system again.
    private var createdFolders: Set<FilePath> = []
    /// Folders with a file renamed into them since the last ``syncWrittenFolders()``.
    private var unsyncedFolders: Set<FilePath> = []
    /// Each resource's `live` as last rendered, with the fields it was rendered from
    /// (``ResourceStatus/liveDocument``): a file rewritten for its counters does not render it again.
    private var renderedLive: [ResourceID: (live: CanonicalFields?, address: String?, value: StatusValue?)] = [:]

    public init(directory: String) {
        self.directory = FilePath(directory)
    }

    public func path(for id: ResourceID) -> FilePath {
        folder(for: id.kind).appending(Self.fileName(for: id.name))
    }

    /// `NAME.yaml` for a valid name (SPEC: `S/<kind>s/<name>.yaml`). An invalid resource has a status too (it says
    /// why), but its name may hold `/`, `..` or anything else: every byte but a-z, A-Z, 0-9, `-` and `_` is
    /// percent-encoded, so no name reaches outside its folder or names a hidden or temporary file, and a long one
    /// is cut and told apart by a hash. A valid name's bytes are all kept. (The name a status belongs to is read
    /// from the file, not its name.)
    static func fileName(for name: String) -> String {
        var encoded = name.isEmpty ? "%" : ""
        for byte in name.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                encoded += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        if encoded.utf8.count > 128 {
            // FNV-1a of the whole name: the cut names of two long names stay apart.
            var hash = FNV1a64()
            hash.combine(name.utf8)
            encoded = String(decoding: encoded.utf8.prefix(100), as: UTF8.self) + "~" + hash.text
        }
        return encoded + ".yaml"
    }

    func folder(for kind: ResourceKind) -> FilePath {
        directory.appending(kind.statusFolder)
    }

    /// Removes temporary files a killed reconciler left behind (see `atomicWrite`). Only the reconciler
    /// that owns the directory calls this: `alb status` must not race a live writer.
    public func removeStaleTemporaryFiles() {
        for kind in ResourceKind.allCases {
            let folder = folder(for: kind)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.string)) ?? []
            for name in names where name.hasPrefix(".") && name.hasSuffix(".tmp") {
                try? FileManager.default.removeItem(atPath: folder.appending(name).string)
            }
        }
    }

    /// A status file is a few kilobytes; anything larger is not one of ours.
    static let largestStatusFile = 1 << 20

    /// Every status file currently on disk (unreadable or foreign files, and anything that is not a regular
    /// file, are skipped).
    public func loadAll() -> [ResourceID: ResourceStatus] {
        var result: [ResourceID: ResourceStatus] = [:]
        for kind in ResourceKind.allCases {
            let folder = folder(for: kind)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.string)) ?? []
            for name in names where name.hasSuffix(".yaml") && !name.hasPrefix(".") {
                // Read as manifests are: never blocking (a FIFO named like a status file hung `alb status`).
                guard case .success(let bytes)? = ManifestDirectory.readRegularFile(folder.appending(name).string,
                                                                                    limit: Self.largestStatusFile),
                      case let text = String(decoding: bytes, as: UTF8.self),
                      let status = ResourceStatus.parse(yaml: text), status.id.kind == kind else { continue }
                result[status.id] = status
                written[status.id] = (status, text)
            }
        }
        return result
    }

    /// Whether a status whose counters alone changed is written (``ResourceStatus/equalsApartFromCounters(_:)``).
    public enum Counters: Sendable {
        /// Written: the periodic refresh, shutdown, the first pass.
        case refresh
        /// Not written: the file keeps the counters it has until the next refresh. A pass that an edit
        /// triggered writes the resources it changed, not the 100 files whose counters the traffic since
        /// the last pass moved (after a cold start's first requests, 20-30 ms in which the next edit waits).
        case keepWritten
    }

    /// Writes the status file unless its contents are unchanged (or, with `counters: .keepWritten`, changed
    /// only in counters). Returns whether it wrote.
    @discardableResult
    public func write(_ status: ResourceStatus, counters: Counters = .refresh) throws -> Bool {
        if let old = written[status.id]?.status {
            if old == status { return false }
            if counters == .keepWritten, status.equalsApartFromCounters(old) { return false }
        }
        let text = render(status)
        if written[status.id]?.text != text {
            let target = path(for: status.id)
            let folder = target.removingLastComponent()
            do {
                try createFolderOnce(folder)
                try Self.atomicWrite(text, to: target)
            } catch let error as StatusWriteError where error.errno == ENOENT {
                // Someone removed the status directory while we run: create it again.
                createdFolders.remove(folder)
                try createFolderOnce(folder)
                try Self.atomicWrite(text, to: target)
            }
            unsyncedFolders.insert(folder)
        }
        written[status.id] = (status, text)
        return true
    }

    /// The status file's text: ``ResourceStatus/yaml()``, with `live` rendered again only when it changed.
    func render(_ status: ResourceStatus) -> String {
        let live: StatusValue?
        // CanonicalFields' == compares the text of the values; their types change the rendering too.
        if let cached = renderedLive[status.id], cached.live == status.live,
           cached.live?.scalarTypes == status.live?.scalarTypes, cached.address == status.address {
            live = cached.value
        } else {
            live = status.liveDocument
            renderedLive[status.id] = (status.live, status.address, live)
        }
        return status.document(live: live).yaml
    }

    /// Forgets what it wrote, so the next write of every status puts its file back even if this store
    /// wrote the same bytes before (another process may have written the file meanwhile: a takeover that
    /// failed half-way). Returns the resources whose files are on disk now.
    public func forgetWritten() -> Set<ResourceID> {
        let onDisk = Set(loadAll().keys)
        written = [:]
        return onDisk
    }

    /// The status directory was removed under this process (``StatusDirectoryLock/reacquiredIfRemoved(directory:)``):
    /// forget what was written, the folders made and the open events.log, so the next write puts every file
    /// back and the next event starts a new events.log.
    public func directoryWasRemoved() {
        written = [:]
        renderedLive = [:]
        createdFolders = []
        try? eventsHandle?.close()
        eventsHandle = nil
    }

    public func remove(_ id: ResourceID) {
        try? FileManager.default.removeItem(atPath: path(for: id).string)
        written[id] = nil
        renderedLive[id] = nil
    }

    /// Adds one JSON line to `events.log`: kept until ``flushEvents()``, which the reconciler calls once its
    /// pass has acted (with the status files). One `write` a pass instead of one an event: a cold start's
    /// pass records 200 events for 100 listeners, half of them before it binds the first socket.
    public func event(kind: ResourceKind, name: String, action: String, from: String? = nil, to: String? = nil,
                      message: String = "", at now: Date = Date()) {
        // Events are appended in the order they happen; their times never go backwards, even when an
        // action is stamped with its pass's start.
        let at = max(now, lastEventTime)
        lastEventTime = at
        // One JSON object per line, keys in alphabetical order, written directly (JSONSerialization was a
        // sixth of a cold start's pass).
        let fields: [(String, String?)] = [("action", action), ("from", from), ("kind", kind.rawValue),
                                           ("message", message), ("name", name),
                                           ("time", ResourceStatus.timestamp(at)), ("to", to)]
        var first = true
        for case let (key, value?) in fields {
            pendingEvents.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
            first = false
            JSONValue.quote(key, into: &pendingEvents)
            pendingEvents.append(UInt8(ascii: ":"))
            JSONValue.quote(value, into: &pendingEvents)
        }
        pendingEvents.append(contentsOf: "}\n".utf8)
    }

    /// Appends the events recorded since the last call to `events.log` (created when missing). When the file
    /// cannot be written, they are dropped, as a full disk drops them, and the next call opens it again.
    public func flushEvents() {
        guard !pendingEvents.isEmpty else { return }
        defer { pendingEvents.removeAll(keepingCapacity: pendingEvents.count <= 4096) }
        do {
            if eventsHandle == nil {
                try FileManager.default.createDirectory(atPath: directory.string, withIntermediateDirectories: true)
                let path = directory.appending("events.log").string
                if !FileManager.default.fileExists(atPath: path) {
                    _ = FileManager.default.createFile(atPath: path, contents: nil)
                }
                guard let handle = FileHandle(forWritingAtPath: path) else { return }
                try handle.seekToEnd()
                eventsHandle = handle
            }
            try eventsHandle?.write(contentsOf: pendingEvents)
        } catch {
            eventsHandle = nil
        }
    }

    private func createFolderOnce(_ folder: FilePath) throws {
        guard !createdFolders.contains(folder) else { return }
        try FileManager.default.createDirectory(atPath: folder.string, withIntermediateDirectories: true)
        createdFolders.insert(folder)
    }

    /// Makes the files written since the last call durable: one `fsync` per folder, after a pass's writes,
    /// instead of one per file (103 status files took 100-125 ms with an `fsync` each). A status file is
    /// derived state that the next pass writes again, so a crash between a write and this sync costs nothing
    /// a restart does not put back; readers never see a partial file either way (rename is atomic). So the
    /// syncs run on a queue of their own and the pass does not wait for them: a folder's `fsync` took 25-85 ms
    /// on this machine's busy disk, and the first edit after a cold start waited for the start pass's.
    public func syncWrittenFolders() {
        guard !unsyncedFolders.isEmpty else { return }
        let folders = unsyncedFolders
        unsyncedFolders.removeAll()
        Self.syncQueue.async {
            for folder in folders {
                let descriptor = open(folder.string, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                if descriptor >= 0 {
                    fsync(descriptor)
                    close(descriptor)
                }
            }
        }
    }

    /// One after another, off the reconciler's task.
    private static let syncQueue = DispatchQueue(label: "alb.status-sync", qos: .utility)

    /// Temporary file in the same (existing) directory, then rename: a reader sees the old file or the new
    /// one. Durability comes from ``syncWrittenFolders()``.
    static func atomicWrite(_ text: String, to target: FilePath) throws {
        let folder = target.removingLastComponent()
        let temporary = folder.appending(".\(target.lastComponent?.string ?? "status").\(getpid()).tmp").string
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw StatusWriteError(path: target.string, errno: errno) }
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                let code = errno
                close(descriptor); unlink(temporary)
                throw StatusWriteError(path: target.string, errno: code)
            }
            offset += count
        }
        close(descriptor)
        guard rename(temporary, target.string) == 0 else {
            let code = errno
            unlink(temporary)
            throw StatusWriteError(path: target.string, errno: code)
        }
    }
}

public struct StatusWriteError: Error, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var description: String { "cannot write \(path): \(String(cString: strerror(errno)))" }
}

private extension String {
    func leftPadded(to length: Int) -> String {
        String(repeating: "0", count: max(0, length - self.count)) + self
    }
}
