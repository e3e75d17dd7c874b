import Foundation
import NIOConcurrencyHelpers
#if canImport(Glibc)
import Glibc
#endif

/// Notices changes under a manifest directory.
///
/// On Linux it listens to inotify on every directory of the tree (and the root's parent, so a replaced or
/// late-created root is seen) and reports a change once the tree has been quiet for `settle`. inotify can
/// miss things (a root that did not exist yet, watch limits, a symbolic link swapped above the watched
/// directories as git-sync swaps its worktree link), so every `pollInterval` it also compares a cheap
/// `stat` fingerprint of the tree, taken through the links (a swapped Kubernetes `..data` link changes
/// it); elsewhere that fingerprint is all it uses. Either way it survives
/// rename-over writes, a replaced directory and a directory missing at start.
public struct DirectoryWatcher: Sendable {
    public let directory: ManifestDirectory
    public var pollInterval: Duration = .milliseconds(250)
    public var settle: Duration = .milliseconds(2)

    public init(directory: ManifestDirectory) { self.directory = directory }

    /// Yields once per settled change until the stream is dropped.
    public func changes() -> AsyncStream<Void> {
        let watcher = self
        return AsyncStream { continuation in
            let stopped = StopFlag()
            let thread = Thread {
                let notifier = Notifier(directory: watcher.directory)
                var settled = watcher.directory.fingerprint()
                while !stopped.isSet {
                    let woke = notifier.wait(milliseconds: watcher.pollInterval.milliseconds)
                    if woke {
                        // Drain until the tree has been quiet for `settle` (a checkout touches many files).
                        while notifier.wait(milliseconds: watcher.settle.milliseconds) {}
                        notifier.rewatch()
                    }
                    let current = watcher.directory.fingerprint()
                    if current != settled {
                        settled = current
                        // A link swapped above the watched directories (git-sync's worktree link, the root
                        // itself a link) raises no inotify event: only the fingerprint saw it. Watch the
                        // directories the links lead to now.
                        if !woke { notifier.rewatch() }
                        continuation.yield()
                    }
                }
                notifier.close()
                continuation.finish()
            }
            continuation.onTermination = { _ in stopped.set() }
            thread.name = "alb-watcher"
            thread.start()
        }
    }
}

/// Tells the watcher thread to finish; set from whichever task drops the stream.
private final class StopFlag: Sendable {
    private let value = NIOLockedValueBox(false)
    var isSet: Bool { value.withLockedValue { $0 } }
    func set() { value.withLockedValue { $0 = true } }
}

extension Duration {
    var milliseconds: Int32 { Int32(clamping: components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000) }
}

/// The inotify descriptor and its watches; a no-op timer where inotify is unavailable.
private final class Notifier {
    let directory: ManifestDirectory
    #if canImport(Glibc)
    var descriptor: Int32
    #endif

    init(directory: ManifestDirectory) {
        self.directory = directory
        #if canImport(Glibc)
        descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        #endif
        rewatch()
    }

    /// (Re)adds a watch on every directory of the tree; adding an existing watch is harmless.
    func rewatch() {
        #if canImport(Glibc)
        guard descriptor >= 0 else { return }
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM
                              | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)
        _ = inotify_add_watch(descriptor, FilePaths.parent(of: directory.root), mask)
        // The same walk as a pass: links followed once, loops cut, the same bounded budget.
        for folder in directory.walk().directories {
            _ = inotify_add_watch(descriptor, folder, mask)
        }
        #endif
    }

    /// Waits up to `milliseconds` for inotify events; true if some arrived (they are consumed).
    func wait(milliseconds: Int32) -> Bool {
        #if canImport(Glibc)
        guard descriptor >= 0 else {
            usleep(UInt32(milliseconds) * 1000)
            return false
        }
        var request = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&request, 1, milliseconds) > 0 else { return false }
        var buffer = [UInt8](repeating: 0, count: 16384)
        var any = false
        while buffer.withUnsafeMutableBytes({ read(descriptor, $0.baseAddress, $0.count) }) > 0 { any = true }
        return any
        #else
        usleep(UInt32(milliseconds) * 1000)
        return false
        #endif
    }

    func close() {
        #if canImport(Glibc)
        if descriptor >= 0 { Glibc.close(descriptor) }
        #endif
    }
}
