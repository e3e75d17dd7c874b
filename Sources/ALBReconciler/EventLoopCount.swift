import Foundation
import NIOCore

/// How many event loops the data plane runs by default: one per CPU this process may run on.
///
/// NIO's `System.coreCount` counts the machine's cores within cgroup limits but not the process's CPU
/// affinity, so `taskset -c 0 alb ...` (or a container pinned by cpuset through affinity) would start a loop
/// per core of the machine, all sharing the one allowed core: more threads than cores, each waking on its
/// own, for nothing. HAProxy sizes its threads by the affinity mask the same way.
enum EventLoopCount {
    static var available: Int {
        max(1, min(NIOCore.System.coreCount, self.allowedCPUs ?? .max))
    }

    /// CPUs in this process's affinity mask, nil where that cannot be read. (`sched_getaffinity` is a GNU
    /// extension Swift's Glibc module does not offer; the kernel prints the same mask in /proc.)
    private static var allowedCPUs: Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        return self.cpus(inStatus: status)
    }

    /// The bits of the `Cpus_allowed:` mask (hex words separated by commas) of a /proc status text.
    static func cpus(inStatus status: String) -> Int? {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) else { return nil }
        var count = 0
        for character in line.dropFirst("Cpus_allowed:".count) where character != "," && !character.isWhitespace {
            guard let nibble = character.hexDigitValue else { return nil }
            count += nibble.nonzeroBitCount
        }
        return count > 0 ? count : nil
    }
}
