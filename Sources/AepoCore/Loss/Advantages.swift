/// Outcome advantage estimators: one reward per response, responses grouped by prompt.
///
/// `grpo` (verl `compute_grpo_outcome_advantage`): per group g with n >= 2 responses,
///
///     A_i = (r_i - mean_g) / (std_g + epsilon)      (norm_adv_by_std_in_grpo = true)
///     A_i =  r_i - mean_g                           (false: Dr.GRPO)
///
/// where std_g is the unbiased (n - 1) standard deviation and epsilon is added to the std,
/// not the variance. A singleton group uses mean 0 and std 1, as verl does, so its advantage
/// is r / (1 + epsilon) (or r). A group whose rewards are all equal gets 0, never NaN.
///
/// Numerical properties: means and variances are formed in float64 with a two-pass
/// (centred) variance, summing in index order; each advantage is rounded once to float32.
public enum Advantages {
    /// Writes one advantage per response into `out`.
    ///
    /// - `lengths`: valid tokens per response; not used by `grpo`, checked when given.
    public static func compute(_ config: AdvantageConfig, rewards: UnsafeBufferPointer<Float>,
                               groupIds: UnsafeBufferPointer<Int64>, lengths: UnsafeBufferPointer<Int64>? = nil,
                               out: UnsafeMutableBufferPointer<Float>) throws(AepoFailure) {
        let estimator = try AdvantageEstimator(name: config.estimator)
        let B = rewards.count
        if groupIds.count != B {
            throw .shape("group_ids", "has \(groupIds.count) elements, expected \(B) (one per reward)")
        }
        if out.count != B { throw .shape("out", "has \(out.count) elements, expected \(B) (one per reward)") }
        if let lengths {
            if lengths.count != B { throw .shape("lengths", "has \(lengths.count) elements, expected \(B) (one per reward)") }
            for i in 0..<B where lengths[i] < 0 {
                throw .invalid("lengths", "lengths[\(i)] is \(lengths[i]); lengths must be >= 0", index: i)
            }
        }
        for i in 0..<B where !rewards[i].isFinite {
            throw AepoFailure(.nonFinite, "rewards", "rewards[\(i)] is \(rewards[i]); rewards must be finite", index: i)
        }
        switch estimator {
        case .grpo:
            grpo(rewards, Groups(groupIds), epsilon: config.epsilon, normalize: config.normAdvByStdInGrpo, out: out)
        }
        // Finite rewards near ±FLT_MAX can put r - mean beyond float32 (without the std
        // normalisation): an error, never a silent Inf.
        for i in 0..<B where !out[i].isFinite {
            throw AepoFailure(.nonFinite, "out", "out[\(i)]: the advantage of reward \(rewards[i]) overflows float32 "
                              + "although the rewards are finite; rescale the rewards", index: i)
        }
    }

    /// Convenience for Swift callers and tests.
    public static func compute(_ config: AdvantageConfig, rewards: [Float], groupIds: [Int64]) throws(AepoFailure) -> [Float] {
        var out = [Float](repeating: 0, count: rewards.count)
        var failure: AepoFailure?
        rewards.withUnsafeBufferPointer { r in
            groupIds.withUnsafeBufferPointer { g in
                out.withUnsafeMutableBufferPointer { o in
                    do throws(AepoFailure) { try compute(config, rewards: r, groupIds: g, out: o) } catch { failure = error }
                }
            }
        }
        if let failure { throw failure }
        return out
    }

    static func grpo(_ r: UnsafeBufferPointer<Float>, _ groups: Groups, epsilon: Double, normalize: Bool,
                     out: UnsafeMutableBufferPointer<Float>) {
        let G = groups.count
        var sum = [Double](repeating: 0, count: G)
        for i in 0..<r.count { sum[groups.index[i]] += Double(r[i]) }
        var mean = [Double](repeating: 0, count: G)
        for g in 0..<G where groups.size[g] >= 2 { mean[g] = sum[g] / Double(groups.size[g]) }
        var ss = [Double](repeating: 0, count: G)
        for i in 0..<r.count {
            let g = groups.index[i]
            let d = Double(r[i]) - mean[g]
            ss[g] += d * d
        }
        var std = [Double](repeating: 1, count: G)
        for g in 0..<G where groups.size[g] >= 2 { std[g] = (ss[g] / Double(groups.size[g] - 1)).squareRoot() }
        for i in 0..<r.count {
            let g = groups.index[i]
            let centred = Double(r[i]) - mean[g]
            out[i] = Float(normalize ? centred / (std[g] + epsilon) : centred)
        }
    }
}

/// Dense group numbering in order of first appearance.
struct Groups {
    /// Group of each response.
    var index: [Int]
    /// Responses per group.
    var size: [Int]
    var count: Int { size.count }

    init(_ ids: UnsafeBufferPointer<Int64>) {
        var map: [Int64: Int] = [:]
        map.reserveCapacity(ids.count)
        index = [Int](repeating: 0, count: ids.count)
        size = []
        for i in 0..<ids.count {
            if let g = map[ids[i]] {
                index[i] = g
                size[g] += 1
            } else {
                map[ids[i]] = size.count
                index[i] = size.count
                size.append(1)
            }
        }
    }
}
