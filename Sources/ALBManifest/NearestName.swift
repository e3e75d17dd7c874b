/// "Did you mean ...?" for unknown field names: the known name nearest to a typo.
///
/// Distance is the optimal-string-alignment form of Damerau-Levenshtein (insert, delete, substitute, or
/// swap two neighbours, each costing 1) over lower-cased names, so `idleTimout`, `idletimeout` and
/// `idelTimeout` all find `idleTimeout`. Only close names are suggested (at most 1 edit for names of up
/// to 4 characters, 2 beyond): a different field is not a typo, and a wrong suggestion misleads.
public enum NearestName {
    public static func suggestion(for name: String, among known: [String]) -> String? {
        let limit = name.count <= 4 ? 1 : 2
        let typed = name.lowercased()
        var best: (name: String, distance: Int)?
        for candidate in known {
            let distance = Self.distance(typed, candidate.lowercased())
            if distance <= limit, distance < (best?.distance ?? Int.max) { best = (candidate, distance) }
        }
        return best?.name
    }

    /// Optimal string alignment distance between two strings, by Unicode scalar.
    public static func distance(_ lhs: String, _ rhs: String) -> Int {
        let a = Array(lhs.unicodeScalars)
        let b = Array(rhs.unicodeScalars)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        // Three rows are enough: the transposition looks two rows back.
        var beforePrevious = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                var value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    value = min(value, beforePrevious[j - 2] + 1)
                }
                current[j] = value
            }
            (beforePrevious, previous, current) = (previous, current, beforePrevious)
        }
        return previous[b.count]
    }
}
