import ALBManifest
import Foundation

/// Reads the manifest tree: every `*.yaml` / `*.yml` under the root, recursively, skipping names that
/// start with `.`. This is the only place that reads manifests from disk.
public struct ManifestDirectory: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    /// A cheap fingerprint of the tree (paths, sizes, modification times, inodes) for change detection.
    public struct Fingerprint: Equatable, Sendable {
        var entries: [String: [Int64]]
        var rootExists: Bool
    }

    public func manifestPaths() -> [String] {
        var paths: [String] = []
        collect(directory: root, into: &paths, depth: 0)
        return paths.sorted()
    }

    private func collect(directory: String, into paths: inout [String], depth: Int) {
        guard depth < 32, let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where !name.hasPrefix(".") {
            let path = directory == "." ? name : "\(directory)/\(name)"
            var info = stat()
            guard stat(path, &info) == 0 else { continue }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                collect(directory: path, into: &paths, depth: depth + 1)
            } else if (info.st_mode & S_IFMT) == S_IFREG, name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
                paths.append(path)
            }
        }
    }

    public func fingerprint() -> Fingerprint {
        var entries: [String: [Int64]] = [:]
        for path in manifestPaths() {
            var info = stat()
            guard stat(path, &info) == 0 else { continue }
            entries[path] = [Int64(info.st_size), Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec),
                             Int64(info.st_ino), Int64(info.st_ctim.tv_nsec)]
        }
        var rootInfo = stat()
        return Fingerprint(entries: entries, rootExists: stat(root, &rootInfo) == 0)
    }

    /// Reads every manifest. Files larger than the loader's limit are passed truncated-marked so the loader
    /// reports them instead of us reading gigabytes into memory.
    public func read() -> (files: [ManifestFile], rootExists: Bool) {
        var rootInfo = stat()
        let exists = stat(root, &rootInfo) == 0
        var files: [ManifestFile] = []
        for path in manifestPaths() {
            guard let handle = FileHandle(forReadingAtPath: path) else { continue }
            defer { try? handle.close() }
            let data = (try? handle.read(upToCount: ManifestLoader.maxFileBytes + 1)) ?? Data()
            let text = String(decoding: data, as: UTF8.self)
            files.append(ManifestFile(path: path, contents: text))
        }
        return (files, exists)
    }
}
