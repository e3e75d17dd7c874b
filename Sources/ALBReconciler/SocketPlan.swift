/// The order in which one pass binds, hands over and releases listening sockets, planned for the whole
/// set of listeners at once so that no port is released before its new owner holds it.
///
/// A pure function of where listeners serve now and where they should serve after the pass:
/// - An address that is held now and wanted after is never closed: its socket is *handed over* to the
///   instance that wants it (another listener after a swap or rename, or the same listener's
///   replacement after a protocol change). Nothing is bound twice, so nothing can fail to bind.
/// - Only addresses nobody holds are *bound*, after every hand-over.
/// - Instances that will not serve after the pass are *retired* (stop accepting, drain) last. A listener
///   moving to a new address keeps its old instance when the new bind fails (`keepIfBindFails`), so a
///   port held by another process costs nothing that was serving.
public struct SocketPlan: Equatable, Sendable {
    /// Where a listener should serve after the pass.
    public struct Target: Equatable, Sendable {
        /// "host:port".
        public var address: String
        /// A new instance is needed (the listener is starting, or an immutable field changed); false
        /// keeps the serving instance, which is updated in place.
        public var fresh: Bool

        public init(address: String, fresh: Bool) {
            self.address = address
            self.fresh = fresh
        }
    }

    public enum Step: Equatable, Sendable {
        /// The socket on `address` stays open; the new instance of `to` accepts from it from now on.
        /// `from == to` when a listener is replaced on its own address.
        case handOver(address: String, from: String, to: String)
        /// A new instance of `listener` binds `address`, which no listener holds.
        case bind(listener: String, address: String)
        /// `listener` wants `address`, which `holder` gets in this pass; nothing is done for `listener`.
        case conflict(listener: String, address: String, holder: String)
        /// The serving instance of `listener` stops accepting and drains. With `keepIfBindFails`, skip
        /// this when the listener's `bind` in this pass failed: the old instance keeps serving.
        case retire(listener: String, keepIfBindFails: Bool)
    }

    public var steps: [Step]

    /// - Parameters:
    ///   - current: listener name -> the address its serving instance holds.
    ///   - desired: listener name -> where it should serve after the pass; listeners that should not
    ///     serve (stopped, deleted, waiting for a retry) are absent.
    public static func make(current: [String: String], desired: [String: Target]) -> SocketPlan {
        var holder: [String: String] = [:]
        for (listener, address) in current.sorted(by: { $0.key < $1.key }) where holder[address] == nil {
            holder[address] = listener
        }
        var claimedBy: [String: String] = [:]
        // Instances that stay as they are claim their address first: nothing may take it from them.
        for (listener, target) in desired where !target.fresh && current[listener] == target.address {
            claimedBy[target.address] = listener
        }
        var handOvers: [Step] = [], binds: [Step] = [], conflicts: [Step] = []
        var bindsNew: Set<String> = []
        var handedAway: Set<String> = []
        for (listener, target) in desired.sorted(by: { $0.key < $1.key }) {
            if !target.fresh && current[listener] == target.address { continue }
            if let other = claimedBy[target.address] {
                conflicts.append(.conflict(listener: listener, address: target.address, holder: other))
                continue
            }
            claimedBy[target.address] = listener
            if let from = holder[target.address] {
                handOvers.append(.handOver(address: target.address, from: from, to: listener))
                handedAway.insert(from)
            } else {
                binds.append(.bind(listener: listener, address: target.address))
                bindsNew.insert(listener)
            }
        }
        var retires: [Step] = []
        for (listener, address) in current.sorted(by: { $0.key < $1.key }) {
            if let target = desired[listener], !target.fresh, target.address == address,
               claimedBy[address] == listener {
                continue  // kept as it is
            }
            let conflicted = conflicts.contains { step in
                if case .conflict(listener, _, _) = step { return true }
                return false
            }
            if conflicted && !handedAway.contains(listener) {
                continue  // it wanted to move and cannot: it keeps serving where it is
            }
            retires.append(.retire(listener: listener,
                                   keepIfBindFails: bindsNew.contains(listener) && !handedAway.contains(listener)))
        }
        return SocketPlan(steps: handOvers + binds + conflicts + retires)
    }
}
