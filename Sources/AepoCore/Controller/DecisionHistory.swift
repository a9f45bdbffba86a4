/// The last `capacity` decisions, oldest first, kept for logging.
///
/// A ring buffer that grows on demand up to its capacity, so a large `controller.history`
/// costs memory only once that many decisions exist.
public struct DecisionHistory: Sendable, Equatable {
    public let capacity: Int
    private var ring: [ControllerDecision] = []
    /// Index in `ring` of the oldest entry once the ring is full.
    private var head = 0

    public init(capacity: Int) {
        self.capacity = max(0, capacity)
    }

    public var count: Int { ring.count }

    /// The entry `i` places after the oldest one; `i` must be in `0..<count`.
    public subscript(i: Int) -> ControllerDecision {
        ring[(head + i) % ring.count]
    }

    /// All entries, oldest first.
    public var entries: [ControllerDecision] {
        (0..<ring.count).map { self[$0] }
    }

    public mutating func append(_ d: ControllerDecision) {
        guard capacity > 0 else { return }
        if ring.count < capacity {
            ring.append(d)
        } else {
            ring[head] = d
            head = (head + 1) % capacity
        }
    }

    public static func == (a: DecisionHistory, b: DecisionHistory) -> Bool {
        a.capacity == b.capacity && a.entries == b.entries
    }
}
