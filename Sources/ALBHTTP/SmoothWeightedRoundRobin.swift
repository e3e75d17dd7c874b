/// nginx's smooth weighted round robin: each pick adds every weight to its element's running
/// score, takes the highest (the first on a tie) and subtracts the total from it. Weights 3:1 give
/// `a a b a` — spread out, never bursts. Elements with weight 0 (or less) never get picked.
///
/// A value type with no locks: keep one per event loop (the distribution is then exact per loop).
public struct SmoothWeightedRoundRobin<Element> {
    private var elements: [Element]
    private var weights: [Int]
    private var current: [Int]
    private var total: Int

    public init(_ weighted: [(element: Element, weight: Int)]) {
        let usable = weighted.filter { $0.weight > 0 }
        self.elements = usable.map(\.element)
        self.weights = usable.map(\.weight)
        self.current = Array(repeating: 0, count: usable.count)
        self.total = usable.reduce(0) { $0 + $1.weight }
    }

    /// No element has a positive weight.
    public var isEmpty: Bool { self.elements.isEmpty }

    public mutating func next() -> Element? {
        guard !self.elements.isEmpty else { return nil }
        var best = 0
        for index in self.elements.indices {
            self.current[index] += self.weights[index]
            if self.current[index] > self.current[best] {
                best = index
            }
        }
        self.current[best] -= self.total
        return self.elements[best]
    }
}

extension SmoothWeightedRoundRobin: Sendable where Element: Sendable {}
