/// AEPO's REINFORCE regulariser (arXiv 2510.08141; reference code `ray_trainer.fit`):
/// choosing which temperature-T rollouts join the update, and how.
///
/// Selection (`select`): the advantages of the regulariser rollouts are computed within
/// their own groups with the configured estimator; positives are the rows whose advantage
/// (the float32 value `compute_advantages` returns) is > `threshold` rounded to float32,
/// the comparison the reference makes on its fp32 tensor. The first
/// min(k_max, n_positive) positives in input order are kept, then the first floor-half of
/// those when `halve` is set. Selection never halves on its own: `k_max` and `halve` come
/// from the controller. With no positives the selection is empty and the step runs without
/// the regulariser.
///
/// Combination:
/// - `replace`: the update batch is reg[indices] ++ main[k:], with advantages 1 ++ A[k:]
///   (`replaceRows`), aggregated as one batch, as the reference code does.
/// - `weighted`: the selected rows are appended and marked in `reg_rows`; the loss adds
///   alpha * (the same policy loss with A = 1, token-mean over regulariser tokens).
public enum Regularizer {
    public struct Selection: Equatable, Sendable {
        /// Rows of the regulariser batch to use, ascending.
        public var indices: [Int]
        /// Rows whose advantage is above the threshold.
        public var nPositive: Int
        /// indices.count.
        public var k: Int { indices.count }
    }

    /// Where each row of a `replace` update batch comes from.
    public enum RowSource: Equatable, Sendable {
        case regularizer(Int)
        case main(Int)
    }

    public static func select(advantages: UnsafeBufferPointer<Float>, threshold: Double, kMax: Int,
                              halve: Bool) throws(AepoFailure) -> Selection {
        guard kMax >= 0 else { throw .invalid("k_max", "must be >= 0, got \(kMax)") }
        // float32 comparison, as the reference's `advantages > 0.05` on an fp32 tensor.
        let t = Float(threshold)
        var positives: [Int] = []
        for i in 0..<advantages.count where advantages[i] > t { positives.append(i) }
        var k = min(kMax, positives.count)
        if halve { k /= 2 }
        return Selection(indices: Array(positives.prefix(k)), nPositive: positives.count)
    }

    /// Advantages with the configured estimator, then `select`.
    public static func select(_ config: Config, rewards: UnsafeBufferPointer<Float>, groupIds: UnsafeBufferPointer<Int64>,
                              kMax: Int, halve: Bool) throws(AepoFailure) -> Selection {
        guard kMax >= 0 else { throw .invalid("k_max", "must be >= 0, got \(kMax)") }
        let adv = UnsafeMutableBufferPointer<Float>.allocate(capacity: rewards.count)
        defer { adv.deallocate() }
        adv.initialize(repeating: 0)
        try Advantages.compute(config.advantage, rewards: rewards, groupIds: groupIds, out: adv)
        return try select(advantages: UnsafeBufferPointer(adv), threshold: config.regularizer.threshold,
                          kMax: kMax, halve: halve)
    }

    /// Rows of the `replace` update batch: reg[indices] ++ main[k:].
    public static func replaceRows(mainCount: Int, _ s: Selection) -> [RowSource] {
        s.indices.map { .regularizer($0) } + (min(s.k, mainCount)..<mainCount).map { .main($0) }
    }
}
