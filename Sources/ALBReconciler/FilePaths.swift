#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SystemPackage

/// The few path operations Albatross needs, on swift-system's `FilePath`.
///
/// Foundation's `NSString` path methods are not used anywhere: on Linux `deletingLastPathComponent`
/// traps on a one-character path (`alb reconcile m --watch` died with SIGILL), and `URL` standardizes
/// without resolving symbolic links. `FilePath` drops redundant and trailing separators when built, so
/// `m/` and `m` name the same directory and children print as `m/x.yaml`, never `m//x.yaml`.
public enum FilePaths {
    /// `directory/name`, or `name` alone when the directory is `.` (how the tree has always printed).
    public static func child(_ name: String, of directory: String) -> String {
        let parent = FilePath(directory)
        if parent == FilePath(".") || parent.isEmpty { return name }
        return parent.appending(name).string
    }

    /// `path` made absolute against `currentDirectory` and normalized lexically (`.` and `..` removed,
    /// without following links: `a/link/..` is `a`, as a shell's `cd` treats it).
    public static func absolute(_ path: String, currentDirectory: String? = nil) -> FilePath {
        var result = FilePath(path)
        if !result.isAbsolute {
            result = FilePath(currentDirectory ?? Self.currentDirectory()).pushing(result)
        }
        result.lexicallyNormalize()
        return result
    }

    /// The directory that holds `path`, to watch `path` itself appear, disappear or be replaced. Never
    /// empty: the parent of `m` is the current directory, the parent of `/` is `/`.
    public static func parent(of path: String, currentDirectory: String? = nil) -> String {
        let absolute = Self.absolute(path, currentDirectory: currentDirectory)
        let parent = absolute.removingLastComponent()
        return parent.isEmpty ? "/" : parent.string
    }

    /// The canonical path of an existing file (every link resolved), or nil when it does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The canonical form of a path that may not exist yet: its longest existing ancestor resolved
    /// through every link, the rest appended. A status directory is compared with the manifest tree
    /// this way before it is created.
    public static func resolved(_ path: String, currentDirectory: String? = nil) -> FilePath {
        var existing = Self.absolute(path, currentDirectory: currentDirectory)
        var missing: [FilePath.Component] = []
        while !existing.isEmpty {
            if let real = Self.realPath(existing.string) {
                var result = FilePath(real)
                for component in missing.reversed() { result.append(component) }
                return result
            }
            guard let last = existing.lastComponent else { break }
            missing.append(last)
            existing.removeLastComponent()
        }
        return Self.absolute(path, currentDirectory: currentDirectory)
    }

    /// Whether `path` is `root` or lies under it, comparing real paths (a link into the tree is inside).
    public static func isInside(_ path: String, _ root: String, currentDirectory: String? = nil) -> Bool {
        let child = Self.resolved(path, currentDirectory: currentDirectory)
        let parent = Self.resolved(root, currentDirectory: currentDirectory)
        return child.starts(with: parent)
    }

    /// Whether `name` is a manifest file name (`*.yaml` or `*.yml`).
    public static func isManifestName(_ name: String) -> Bool {
        guard let component = FilePath.Component(name), let suffix = component.extension else { return false }
        return suffix == "yaml" || suffix == "yml"
    }

    static func currentDirectory() -> String {
        guard let buffer = getcwd(nil, 0) else { return "." }
        defer { free(buffer) }
        return String(cString: buffer)
    }
}
