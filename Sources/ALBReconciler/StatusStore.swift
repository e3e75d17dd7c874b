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
    private var lastEventTime = Date.distantPast

    public init(directory: String) {
        self.directory = FilePath(directory)
    }

    public func path(for id: ResourceID) -> FilePath {
        folder(for: id.kind).appending("\(id.name).yaml")
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

    /// Every status file currently on disk (unreadable or foreign files are skipped).
    public func loadAll() -> [ResourceID: ResourceStatus] {
        var result: [ResourceID: ResourceStatus] = [:]
        for kind in ResourceKind.allCases {
            let folder = folder(for: kind)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.string)) ?? []
            for name in names where name.hasSuffix(".yaml") && !name.hasPrefix(".") {
                guard let text = try? String(contentsOfFile: folder.appending(name).string, encoding: .utf8),
                      let status = ResourceStatus.parse(yaml: text), status.id.kind == kind else { continue }
                result[status.id] = status
                written[status.id] = (status, text)
            }
        }
        return result
    }

    /// Writes the status file unless its contents are unchanged. Returns whether it wrote.
    @discardableResult
    public func write(_ status: ResourceStatus) throws -> Bool {
        if written[status.id]?.status == status { return false }
        let text = status.yaml()
        if written[status.id]?.text != text {
            try Self.atomicWrite(text, to: path(for: status.id))
        }
        written[status.id] = (status, text)
        return true
    }

    /// Forgets what it wrote, so the next write of every status puts its file back even if this store
    /// wrote the same bytes before (another process may have written the file meanwhile: a takeover that
    /// failed half-way). Returns the resources whose files are on disk now.
    public func forgetWritten() -> Set<ResourceID> {
        let onDisk = Set(loadAll().keys)
        written = [:]
        return onDisk
    }

    public func remove(_ id: ResourceID) {
        try? FileManager.default.removeItem(atPath: path(for: id).string)
        written[id] = nil
    }

    /// Appends one JSON line to `events.log`.
    public func event(kind: ResourceKind, name: String, action: String, from: String? = nil, to: String? = nil,
                      message: String = "", at now: Date = Date()) {
        // Events are appended in the order they happen; their times never go backwards, even when an
        // action is stamped with its pass's start.
        let at = max(now, lastEventTime)
        lastEventTime = at
        var object: [String: String] = [
            "time": ResourceStatus.timestamp(at), "kind": kind.rawValue, "name": name, "action": action,
            "message": message,
        ]
        if let from { object["from"] = from }
        if let to { object["to"] = to }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
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
            try eventsHandle?.write(contentsOf: data + Data("\n".utf8))
        } catch {
            eventsHandle = nil
        }
    }

    /// Temporary file in the same directory, fsync, rename: a reader sees the old file or the new one.
    static func atomicWrite(_ text: String, to target: FilePath) throws {
        let folder = target.removingLastComponent()
        try FileManager.default.createDirectory(atPath: folder.string, withIntermediateDirectories: true)
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
        fsync(descriptor)
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
