import Glibc

/// The k largest (covariance, index) pairs seen, as a binary heap whose root is the
/// weakest: a pair beats another with a larger covariance, or an equal one and a lower
/// index.
struct TopCovariance {
    var cov: [Double] = []
    var index: [Int] = []
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        cov.reserveCapacity(min(capacity, 1 << 16))
        index.reserveCapacity(min(capacity, 1 << 16))
    }

    @inline(__always)
    func beats(_ a: Int, _ b: Int) -> Bool {
        cov[a] > cov[b] || (cov[a] == cov[b] && index[a] < index[b])
    }

    @inline(__always)
    mutating func offer(_ c: Double, _ i: Int) {
        if cov.count < capacity {
            cov.append(c)
            index.append(i)
            var j = cov.count - 1
            while j > 0 {
                let parent = (j - 1) / 2
                guard beats(parent, j) else { break }
                swapAt(parent, j)
                j = parent
            }
        } else if capacity > 0 && (c > cov[0] || (c == cov[0] && i < index[0])) {
            cov[0] = c
            index[0] = i
            var j = 0
            while true {
                var weakest = j
                let left = 2 * j + 1, right = left + 1
                if left < cov.count && beats(weakest, left) { weakest = left }
                if right < cov.count && beats(weakest, right) { weakest = right }
                if weakest == j { break }
                swapAt(weakest, j)
                j = weakest
            }
        }
    }

    /// Offers every valid token of a row. Within one scan indices only grow, so a token
    /// whose covariance does not exceed the root's of a full heap cannot enter it.
    mutating func scan(_ row: StatRow, _ test: CovarianceTest) {
        guard capacity > 0 else { return }
        row.vectors { i, n, valid in
            let c = test.covariance(row.x(i, n), row.a(i, n))
            if cov.count == capacity {
                guard any(valid .& (c .> LossMath.V(repeating: cov[0]))) else { return }
            }
            for lane in 0..<n where valid[lane] { offer(c[lane], i + lane) }
        }
    }

    @inline(__always)
    mutating func swapAt(_ a: Int, _ b: Int) {
        cov.swapAt(a, b)
        index.swapAt(a, b)
    }
}
