import Foundation

/// How a server group picks one of its servers for a request (the manifest's `scheduler`).
public enum Scheduling: Sendable, Equatable {
    /// `Wrr`: smooth weighted round robin, exact across event loops (``WeightedSchedule``).
    case weightedRoundRobin
    /// `Wlc`: the fewest requests in flight per unit of weight (``LeastRequests``).
    case weightedLeastRequests
    /// `Sch`: a consistent hash of the client IP (``SourceIPHash``).
    case sourceIPHash
}

/// Weighted rendezvous hashing (highest random weight) of a key over servers: every server scores the key,
/// the best score wins. Adding or removing one of N equally weighted servers moves only the keys that go
/// to or came from it, about 1/N of them, and a server's share is proportional to its weight. The hash is
/// fixed (FNV-1a, then a SplitMix64 finaliser), not Swift's per-process seeded `Hasher`, so a client keeps
/// its server across restarts and across the event loops of one process.
public enum SourceIPHash {
    /// A server's identity in the hash: its address, so reordering the manifest moves nobody.
    public static func seed(of address: String) -> UInt64 {
        Self.fnv1a(address.utf8)
    }

    /// The index of the server `key` goes to among `servers` (seeds and weights; weight 0 never wins),
    /// nil when none has a positive weight.
    public static func pick(key: String, servers: [(seed: UInt64, weight: Int)]) -> Int? {
        let keyHash = Self.fnv1a(key.utf8)
        var best: (index: Int, score: Double)?
        for (index, server) in servers.enumerated() where server.weight > 0 {
            // A uniform draw in (0, 1) per (key, server); -weight / ln(draw) is the weighted HRW score.
            let mixed = Self.splitMix64(keyHash ^ server.seed)
            let draw = (Double(mixed >> 11) + 0.5) / Double(UInt64(1) << 53)
            let score = -Double(server.weight) / log(draw)
            if score > (best?.score ?? -1) {
                best = (index, score)
            }
        }
        return best?.index
    }

    static func fnv1a(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    static func splitMix64(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// Weighted least requests: the server with the fewest requests in flight per unit of weight
/// (`active / weight`, compared by cross-multiplying, so no division and no rounding); among equals, the
/// first from a rotating start, so ties go round robin. Weight 0 never wins.
public enum LeastRequests {
    /// The index of the chosen server, nil when none has a positive weight. `start` rotates the tie order
    /// (any integer; the caller increments it per pick).
    public static func pick(active: [Int], weights: [Int], start: Int) -> Int? {
        let count = weights.count
        guard count > 0 else { return nil }
        var best: Int?
        for offset in 0..<count {
            let index = (Int(UInt(bitPattern: start) % UInt(count)) + offset) % count
            guard weights[index] > 0 else { continue }
            if let current = best {
                // active[index] / weights[index] < active[current] / weights[current]
                if active[index] * weights[current] < active[current] * weights[index] { best = index }
            } else {
                best = index
            }
        }
        return best
    }
}
