/// Outcome advantage estimators: one reward per response, responses grouped by prompt
/// (verl `core_algos.py`; groups are responses that share a group id).
///
/// `grpo` (`compute_grpo_outcome_advantage`): per group g with n >= 2 responses,
///
///     A_i = (r_i - mean_g) / (std_g + epsilon)      (norm_adv_by_std_in_grpo = true)
///     A_i =  r_i - mean_g                           (false: Dr.GRPO)
///
/// where std_g is the unbiased (n - 1) standard deviation and epsilon is added to the std,
/// not the variance. A singleton group uses mean 0 and std 1, as verl does, so its advantage
/// is r / (1 + epsilon) (or r). A group whose rewards are all equal gets 0, never NaN.
///
/// `rloo` (`compute_rloo_outcome_advantage`): A_i = n/(n-1) (r_i - mean_g), the reward minus
/// the mean of the other n - 1 responses. A singleton has no other response:
/// `advantage.rloo_singleton` = "zero" gives 0 (verl's `rloo_vectorized`), "score" gives r
/// unchanged (verl's `rloo`).
///
/// `reinforce_plus_plus_baseline` (`compute_reinforce_plus_plus_baseline_outcome_advantage`):
/// a_i = r_i - mean_g (a singleton's mean is 0), broadcast over the response's `lengths[i]`
/// valid tokens, then whitened over the N valid tokens of the batch as verl's
/// `masked_whiten` does:
///
///     mu  = sum_i len_i a_i / (N + 1e-8)
///     var = sum_i len_i (a_i - mu)^2 / (N + 1e-8) * N / (N - 1)      (Bessel)
///     A_i = (a_i - mu) / sqrt(var + 1e-8),  and 0 for a response with no valid token
///
/// It needs `lengths`, and N >= 2 (verl raises for N <= 1).
///
/// `grpo_passk` (`compute_grpo_passk_outcome_advantage`, arXiv 2503.19595): in each group
/// only the best response gets A = r_max - r_second (divided by std_g + epsilon when
/// norm_adv_by_std_in_grpo is set); every other response gets 0. Ties for the best go to the
/// lowest index. Every group needs two or more responses.
///
/// Numerical properties: means and variances are formed in float64 with two-pass (centred)
/// sums in index order; each advantage is rounded once to float32.
public enum Advantages {
    /// Writes one advantage per response into `out`.
    ///
    /// - `lengths`: valid tokens per response; required by `reinforce_plus_plus_baseline`,
    ///   checked (>= 0) whenever given.
    public static func compute(_ config: AdvantageConfig, rewards: UnsafeBufferPointer<Float>,
                               groupIds: UnsafeBufferPointer<Int64>, lengths: UnsafeBufferPointer<Int64>? = nil,
                               out: UnsafeMutableBufferPointer<Float>) throws(AepoFailure) {
        let estimator = try AdvantageEstimator.parse(config.estimator, key: "advantage.estimator")
        let singleton = try RlooSingleton.parse(config.rlooSingleton, key: "advantage.rloo_singleton")
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
        let groups = Groups(groupIds)
        switch estimator {
        case .grpo:
            grpo(rewards, groups, epsilon: config.epsilon, normalize: config.normAdvByStdInGrpo, out: out)
        case .rloo:
            rloo(rewards, groups, singletonScore: singleton == .score, out: out)
        case .reinforcePlusPlusBaseline:
            guard let lengths else {
                throw .invalid("lengths", "is required by advantage.estimator \"reinforce_plus_plus_baseline\", which whitens over the valid tokens of the batch; pass the valid-token count of every response")
            }
            try reinforcePlusPlusBaseline(rewards, groups, lengths: lengths, out: out)
        case .grpoPassk:
            try grpoPassk(rewards, groups, epsilon: config.epsilon, normalize: config.normAdvByStdInGrpo, out: out)
        }
        // Finite rewards near ±FLT_MAX can put r - mean beyond float32 (without the std
        // normalisation): an error, never a silent Inf.
        for i in 0..<B where !out[i].isFinite {
            throw AepoFailure(.nonFinite, "out", "out[\(i)]: the advantage of reward \(rewards[i]) overflows float32 "
                              + "although the rewards are finite; rescale the rewards", index: i)
        }
    }

    /// Convenience for Swift callers and tests.
    public static func compute(_ config: AdvantageConfig, rewards: [Float], groupIds: [Int64],
                               lengths: [Int64]? = nil) throws(AepoFailure) -> [Float] {
        var out = [Float](repeating: 0, count: rewards.count)
        var failure: AepoFailure?
        rewards.withUnsafeBufferPointer { r in
            groupIds.withUnsafeBufferPointer { g in
                out.withUnsafeMutableBufferPointer { o in
                    func run(_ len: UnsafeBufferPointer<Int64>?) {
                        do throws(AepoFailure) { try compute(config, rewards: r, groupIds: g, lengths: len, out: o) } catch {
                            failure = error
                        }
                    }
                    if let lengths { lengths.withUnsafeBufferPointer { run($0) } } else { run(nil) }
                }
            }
        }
        if let failure { throw failure }
        return out
    }

    /// Per-group sums of the rewards and the means of groups of two or more (0 for a
    /// singleton, as verl's estimators use).
    static func groupMeans(_ r: UnsafeBufferPointer<Float>, _ groups: Groups) -> [Double] {
        let G = groups.count
        var sum = [Double](repeating: 0, count: G)
        for i in 0..<r.count { sum[groups.index[i]] += Double(r[i]) }
        var mean = [Double](repeating: 0, count: G)
        for g in 0..<G where groups.size[g] >= 2 { mean[g] = sum[g] / Double(groups.size[g]) }
        return mean
    }

    /// Unbiased standard deviations per group (1 for a singleton), about `mean`.
    static func groupStd(_ r: UnsafeBufferPointer<Float>, _ groups: Groups, mean: [Double]) -> [Double] {
        let G = groups.count
        var ss = [Double](repeating: 0, count: G)
        for i in 0..<r.count {
            let g = groups.index[i]
            let d = Double(r[i]) - mean[g]
            ss[g] += d * d
        }
        var std = [Double](repeating: 1, count: G)
        for g in 0..<G where groups.size[g] >= 2 { std[g] = (ss[g] / Double(groups.size[g] - 1)).squareRoot() }
        return std
    }

    static func grpo(_ r: UnsafeBufferPointer<Float>, _ groups: Groups, epsilon: Double, normalize: Bool,
                     out: UnsafeMutableBufferPointer<Float>) {
        let mean = groupMeans(r, groups)
        let std = groupStd(r, groups, mean: mean)
        for i in 0..<r.count {
            let g = groups.index[i]
            let centred = Double(r[i]) - mean[g]
            out[i] = Float(normalize ? centred / (std[g] + epsilon) : centred)
        }
    }

    static func rloo(_ r: UnsafeBufferPointer<Float>, _ groups: Groups, singletonScore: Bool,
                     out: UnsafeMutableBufferPointer<Float>) {
        let mean = groupMeans(r, groups)
        for i in 0..<r.count {
            let g = groups.index[i]
            let n = groups.size[g]
            if n < 2 {
                out[i] = singletonScore ? r[i] : 0
            } else {
                out[i] = Float(Double(n) / Double(n - 1) * (Double(r[i]) - mean[g]))
            }
        }
    }

    static func reinforcePlusPlusBaseline(_ r: UnsafeBufferPointer<Float>, _ groups: Groups,
                                          lengths: UnsafeBufferPointer<Int64>,
                                          out: UnsafeMutableBufferPointer<Float>) throws(AepoFailure) {
        let mean = groupMeans(r, groups)
        var tokens = 0.0
        var s1 = 0.0
        for i in 0..<r.count where lengths[i] > 0 {
            tokens += Double(lengths[i])
            s1 += Double(lengths[i]) * (Double(r[i]) - mean[groups.index[i]])
        }
        guard tokens >= 2 else {
            throw .invalid("lengths", "the batch has \(Int(tokens)) valid token\(tokens == 1 ? "" : "s"); advantage.estimator \"reinforce_plus_plus_baseline\" whitens over the valid tokens with Bessel's correction, which needs at least 2")
        }
        let mu = s1 / (tokens + 1e-8)
        var s2 = 0.0
        for i in 0..<r.count where lengths[i] > 0 {
            let d = Double(r[i]) - mean[groups.index[i]] - mu
            s2 += Double(lengths[i]) * d * d
        }
        let variance = s2 / (tokens + 1e-8) * (tokens / (tokens - 1))
        let scale = 1 / (variance + 1e-8).squareRoot()
        for i in 0..<r.count {
            out[i] = lengths[i] > 0 ? Float((Double(r[i]) - mean[groups.index[i]] - mu) * scale) : 0
        }
    }

    static func grpoPassk(_ r: UnsafeBufferPointer<Float>, _ groups: Groups, epsilon: Double, normalize: Bool,
                          out: UnsafeMutableBufferPointer<Float>) throws(AepoFailure) {
        let G = groups.count
        // The first response of each group, for the error message.
        var first = [Int](repeating: -1, count: G)
        for i in 0..<r.count where first[groups.index[i]] < 0 { first[groups.index[i]] = i }
        for g in 0..<G where groups.size[g] < 2 {
            let i = first[g]
            throw .invalid("group_ids", "group \(groups.id(i)) (response \(i)) has one response; advantage.estimator \"grpo_passk\" gives the best response r_max - r_second and needs at least 2 responses per group", index: i)
        }
        // Best and second best per group; ties go to the lower index (strict comparisons in
        // index order).
        var best = [Int](repeating: -1, count: G)
        var second = [Double](repeating: -.infinity, count: G)
        for i in 0..<r.count {
            let g = groups.index[i]
            let v = Double(r[i])
            if best[g] < 0 {
                best[g] = i
            } else if v > Double(r[best[g]]) {
                second[g] = Double(r[best[g]])
                best[g] = i
            } else if v > second[g] {
                second[g] = v
            }
        }
        let std = normalize ? groupStd(r, groups, mean: groupMeans(r, groups)) : []
        for i in 0..<r.count { out[i] = 0 }
        for g in 0..<G {
            let b = best[g]
            let gap = Double(r[b]) - second[g]
            out[b] = Float(normalize ? gap / (std[g] + epsilon) : gap)
        }
    }
}

/// Dense group numbering in order of first appearance.
struct Groups {
    /// Group of each response.
    var index: [Int]
    /// Responses per group.
    var size: [Int]
    /// The id of each group, in order of first appearance.
    var ids: [Int64]
    var count: Int { size.count }

    /// The group id of response i.
    func id(_ i: Int) -> Int64 { ids[index[i]] }

    init(_ ids: UnsafeBufferPointer<Int64>) {
        var map: [Int64: Int] = [:]
        map.reserveCapacity(ids.count)
        index = [Int](repeating: 0, count: ids.count)
        size = []
        self.ids = []
        for i in 0..<ids.count {
            if let g = map[ids[i]] {
                index[i] = g
                size[g] += 1
            } else {
                map[ids[i]] = size.count
                index[i] = size.count
                size.append(1)
                self.ids.append(ids[i])
            }
        }
    }
}
