import ALBManifest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the manifest tree: every `*.yaml` / `*.yml` under the root, recursively, skipping names that
/// start with `.`. This is the only place that reads manifests from disk.
///
/// Symbolic links are followed (a root that is a link, as Kubernetes ConfigMap and git-sync mounts are,
/// and links inside the tree), each directory is read at most once per pass (identified by device and
/// inode), so a link loop is reported on the link and the rest of the tree still loads. A path that
/// cannot be what it should be (a dangling link, a FIFO or a directory named `x.yaml`, a loop) becomes a
/// ``ManifestFile`` with a `readError`: the loader reports it as `PATH: error: MESSAGE` and a reconciler
/// keeps what that path last defined, as for a file that does not parse.
///
/// Work per pass is bounded: at most ``maxEntries`` names, ``maxDepth`` levels and ``maxTotalBytes``
/// of manifests; what lies beyond is reported, not read.
public struct ManifestDirectory: Sendable {
    public let root: String

    public static let maxEntries = 10_000
    public static let maxDepth = 32
    public static let maxTotalBytes = 64 << 20

    public init(root: String) { self.root = root }

    /// What the root is, before anything under it is read.
    public enum RootState: Equatable, Sendable {
        case directory
        case missing
        /// It exists but is no directory (a file, a FIFO), or cannot be reached: the message says which.
        case unusable(String)

        /// `no such directory`, `not a directory (a regular file)`, ...; nil for a directory.
        public var problem: String? {
            switch self {
            case .directory: nil
            case .missing: "no such directory"
            case .unusable(let message): message
            }
        }
    }

    /// One walk of the tree: the manifest files to read, the directories read (for a watcher), and the
    /// paths that are not what they should be.
    public struct Tree: Sendable {
        public var root: RootState
        public var manifestPaths: [String] = []
        public var directories: [String] = []
        /// Path -> why it cannot be read.
        public var problems: [String: String] = [:]
    }

    /// A cheap fingerprint of the tree (paths, sizes, modification times, inodes, problems) for change
    /// detection.
    public struct Fingerprint: Equatable, Sendable {
        var entries: [String: [Int64]]
        var problems: [String: String]
        var root: RootState
    }

    public func rootState() -> RootState {
        var info = stat()
        guard stat(root, &info) == 0 else {
            let code = errno
            if code == ENOENT {
                var link = stat()
                return lstat(root, &link) == 0 ? .unusable("dangling symbolic link") : .missing
            }
            return .unusable(Self.describe(errno: code))
        }
        if Self.fileType(info) == S_IFDIR { return .directory }
        return .unusable("not a directory (\(Self.describe(type: Self.fileType(info))))")
    }

    public func manifestPaths() -> [String] { walk().manifestPaths }

    /// Walks the tree once, following each link once and each directory at most once.
    public func walk() -> Tree {
        var tree = Tree(root: rootState())
        guard tree.root == .directory else { return tree }
        var rootInfo = stat()
        guard stat(root, &rootInfo) == 0 else { return tree }
        var walker = Walker(tree: tree)
        walker.visit(directory: root, identity: DirectoryIdentity(rootInfo), ancestors: [:], depth: 0, rootPath: root)
        tree = walker.tree
        tree.manifestPaths.sort()
        return tree
    }

    public func fingerprint() -> Fingerprint {
        let tree = walk()
        var entries: [String: [Int64]] = [:]
        for path in tree.manifestPaths {
            var info = stat()
            guard stat(path, &info) == 0 else { continue }
            entries[path] = [Int64(info.st_size), Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec),
                             Int64(info.st_ino), Int64(info.st_ctim.tv_nsec)]
        }
        return Fingerprint(entries: entries, problems: tree.problems, root: tree.root)
    }

    /// Reads every manifest, and turns every path problem into a file the loader reports. Files larger
    /// than the loader's limit are read one byte past it so the loader reports them instead of us
    /// reading gigabytes into memory. `rootExists` is true when the root is a directory.
    public func read() -> (files: [ManifestFile], rootExists: Bool) {
        let tree = walk()
        var files: [ManifestFile] = []
        var totalBytes = 0
        for path in tree.manifestPaths {
            guard totalBytes <= Self.maxTotalBytes else {
                files.append(ManifestFile(path: path, readError:
                    "not read: the manifests before it already hold more than \(Self.maxTotalBytes >> 20) MiB"))
                continue
            }
            switch Self.readManifest(path) {
            case .success(let bytes):
                totalBytes += bytes.count
                files.append(ManifestFile(path: path, contents: String(decoding: bytes, as: UTF8.self)))
            case .failure(let problem):
                files.append(ManifestFile(path: path, readError: problem.message))
            case nil:
                continue  // gone since the walk: as if the walk had not seen it
            }
        }
        for (path, message) in tree.problems {
            files.append(ManifestFile(path: path, readError: message))
        }
        files.sort { $0.path < $1.path }
        return (files, tree.root == .directory)
    }

    struct ReadProblem: Error {
        var message: String
    }

    /// At most `maxFileBytes + 1` bytes of a regular file; nil when it no longer exists. Opened without
    /// blocking and checked again after opening: a FIFO swapped in after the walk must not hang a pass.
    static func readManifest(_ path: String) -> Result<[UInt8], ReadProblem>? {
        readRegularFile(path, limit: ManifestLoader.maxFileBytes + 1)
    }

    /// At most `limit` bytes of a regular file; nil when it does not exist. Opened without blocking and refused
    /// unless it is a regular file: a FIFO (or a device) in its place must not hang a pass, or `alb validate`.
    static func readRegularFile(_ path: String, limit: Int) -> Result<[UInt8], ReadProblem>? {
        let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            return .failure(ReadProblem(message: describe(errno: errno)))
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { return .failure(ReadProblem(message: describe(errno: errno))) }
        guard fileType(info) == S_IFREG else {
            return .failure(ReadProblem(message: "not a regular file (\(describe(type: fileType(info))))"))
        }
        var bytes = [UInt8](repeating: 0, count: min(limit, max(Int(info.st_size), 0) + 1))
        var count = 0
        while count < bytes.count {
            let got = bytes.withUnsafeMutableBytes { buffer in
                systemRead(descriptor, buffer.baseAddress.map { $0 + count }, buffer.count - count)
            }
            if got < 0 {
                if errno == EINTR { continue }
                return .failure(ReadProblem(message: describe(errno: errno)))
            }
            if got == 0 { break }
            count += got
            // The file grew since fstat: read on, up to the limit.
            if count == bytes.count && bytes.count < limit {
                bytes.append(contentsOf: [UInt8](repeating: 0, count: min(limit - bytes.count, 64 << 10)))
            }
        }
        return .success(Array(bytes[..<count]))
    }

    static func fileType(_ info: stat) -> mode_t { info.st_mode & S_IFMT }

    static func describe(type: mode_t) -> String {
        switch type {
        case S_IFREG: "a regular file"
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFLNK: "a symbolic link"
        default: "an unknown kind of file"
        }
    }

    static func describe(errno code: Int32) -> String {
        switch code {
        case ENOENT: "no such file or directory"
        case ELOOP: "symbolic link loop (too many levels of symbolic links)"
        case EACCES: "permission denied"
        case ENOTDIR: "a path component is not a directory"
        default: String(cString: strerror(code)).lowercased()
        }
    }
}

#if canImport(Glibc)
private let systemRead = Glibc.read
#elseif canImport(Darwin)
private let systemRead = Darwin.read
#endif

/// A directory as the kernel knows it: the same pair is the same directory, whatever the path.
struct DirectoryIdentity: Hashable {
    var device: UInt64
    var inode: UInt64

    init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}

/// The state of one walk: what was found so far and what is left of the budget.
private struct Walker {
    var tree: ManifestDirectory.Tree
    var visited: [DirectoryIdentity: String] = [:]
    var entriesLeft = ManifestDirectory.maxEntries
    var exhausted = false

    init(tree: ManifestDirectory.Tree) { self.tree = tree }

    mutating func visit(directory path: String, identity: DirectoryIdentity, ancestors: [DirectoryIdentity: String],
                        depth: Int, rootPath: String) {
        visited[identity] = path
        tree.directories.append(path)
        var ancestors = ancestors
        ancestors[identity] = path
        let names: [String]
        switch Self.listDirectory(path) {
        case .success(let listed): names = listed
        case .failure(let problem):
            tree.problems[path] = problem.message
            return
        }
        for name in names.sorted() where !name.hasPrefix(".") {
            guard !exhausted else { return }
            entriesLeft -= 1
            if entriesLeft < 0 {
                exhausted = true
                tree.problems[rootPath] = "more than \(ManifestDirectory.maxEntries) entries: the rest of the tree is not read"
                return
            }
            let child = FilePaths.child(name, of: path)
            let isManifest = FilePaths.isManifestName(name)
            var link = stat()
            guard lstat(child, &link) == 0 else { continue }  // gone since it was listed
            let isLink = ManifestDirectory.fileType(link) == S_IFLNK
            var info = stat()
            guard stat(child, &info) == 0 else {
                let code = errno
                if isLink && code == ENOENT {
                    tree.problems[child] = "dangling symbolic link (its target \(Self.linkTarget(child)) does not exist)"
                } else if isLink || isManifest {
                    tree.problems[child] = ManifestDirectory.describe(errno: code)
                }
                continue
            }
            switch ManifestDirectory.fileType(info) {
            case S_IFDIR:
                if isManifest {
                    tree.problems[child] = "a directory where a manifest file is expected"
                    continue
                }
                let childIdentity = DirectoryIdentity(info)
                if let ancestor = ancestors[childIdentity] {
                    tree.problems[child] = "symbolic link loop: it leads back to \(ancestor)"
                } else if let other = visited[childIdentity] {
                    tree.problems[child] = "the same directory as \(other), which is read already"
                } else if depth + 1 >= ManifestDirectory.maxDepth {
                    tree.problems[child] = "more than \(ManifestDirectory.maxDepth) directories deep: not read"
                } else {
                    visit(directory: child, identity: childIdentity, ancestors: ancestors, depth: depth + 1,
                          rootPath: rootPath)
                }
            case S_IFREG:
                if isManifest { tree.manifestPaths.append(child) }
            default:
                if isManifest {
                    let type = ManifestDirectory.describe(type: ManifestDirectory.fileType(info))
                    tree.problems[child] = "not a regular file (\(type))"
                }
            }
        }
    }

    static func listDirectory(_ path: String) -> Result<[String], ManifestDirectory.ReadProblem> {
        guard let stream = opendir(path) else {
            return .failure(ManifestDirectory.ReadProblem(message: ManifestDirectory.describe(errno: errno)))
        }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return .success(names)
    }

    static func linkTarget(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBufferPointer { bytes -> Int in
            guard let base = bytes.baseAddress else { return -1 }
            return readlink(path, base, bytes.count)
        }
        guard count > 0 else { return "?" }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
