import Glibc

/// Online identification of the entropy loop, for the self-tuning adaptive controller
/// (docs/CONTROLLER.md, "Self-tuning").
///
/// The loop model, per training step t (the decision's actuator u_t = T_t - 1 is applied,
/// then the statistic y_t is read):
///
///     y_t = L_t + c·u_t + v_t                          same-step response c, measurement noise v
///     L_t = L_{t-1} + b·u_{t-d} + g + a·y_{t-1} + w_t  per-step effect b after d steps, drift
///                                                      g + a·y (a <= 0 pulls entropy back
///                                                      toward a resting level), process noise w
///
/// L is the part of the statistic that persists (the policy's entropy); c is the jump the
/// regulariser rows drawn at T cause in the batch they are scored in; g + a·y is the pull of
/// the rest of training (entropy collapse), which depends on where entropy is.
///
/// Estimator: for each candidate delay d = 0...`maxDelay`, two Kalman filters run on the
/// state [L, b, c, g, a]: one with a held at 0 (a constant pull), one that learns a. With
/// the inputs and the last observation known, the model is linear in that state, so each
/// filter is exact for its hypothesis and the feedback that made the inputs cannot bias
/// it. The parameters follow slow random walks (the forgetting: b by 1% per step plus
/// 2e-4, c by 2e-3, g by 3e-4, a by 1e-5 per step). Each filter scores its own predictions
/// (a discounted log-likelihood, factor 0.97); the controller uses the best one, switching
/// only when another leads by 1 nat. The pull a·y matters after large excursions, for
/// instance after a stretch at the actuator's bound against an unreachable target; the
/// constant-pull filters are the better predictors (fewer parameters) elsewhere. The noise levels come from the one-step residuals of
/// the differenced model, e_t = w + v_t - v_{t-1}: var(e) = σw² + 2σv² and
/// cov(e_t, e_{t-1}) = -σv² (discounted moments, factor 0.95).
///
/// Every step costs a few hundred flops; every value is a deterministic function of the
/// observations, so a restored estimator continues bit for bit.
public struct LoopEstimator: Sendable, Equatable {
    /// The longest delay considered, in steps.
    public static let maxDelay = 4
    static let n = 5
    /// Filters: delays 0...maxDelay with a = 0, then the same delays with a learned.
    public static let filterCount = 2 * (maxDelay + 1)

    /// One hypothesis: a delay, and whether the pull depends on the level.
    public struct Filter: Sendable, Equatable {
        /// The delay d of this hypothesis.
        public var delay: Int
        /// Whether a is learned (else it stays exactly 0).
        public var leaky: Bool
        /// [L, b, c, g, a].
        public var mean: [Double]
        /// Their covariance, 5x5 row-major.
        public var covariance: [Double]
        /// Discounted log-likelihood of the filter's one-step predictions.
        public var score: Double
        /// Discounted mean square of the filter's per-step correction of L.
        public var correction: Double

        /// Every number finite and every variance >= 0.
        var isFinite: Bool {
            guard mean.allSatisfy(\.isFinite), covariance.allSatisfy(\.isFinite), score.isFinite,
                  correction.isFinite, correction >= 0 else { return false }
            let n = LoopEstimator.n
            return covariance.count == n * n && (0..<n).allSatisfy { covariance[$0 * n + $0] >= 0 }
        }

        public init(delay: Int, leaky: Bool, mean: [Double], covariance: [Double], score: Double,
                    correction: Double) {
            self.delay = delay
            self.leaky = leaky
            self.mean = mean
            self.covariance = covariance
            self.score = score
            self.correction = correction
        }

        public static func == (a: Filter, b: Filter) -> Bool {
            a.delay == b.delay && a.leaky == b.leaky && bitEqual(a.mean, b.mean) && bitEqual(a.covariance, b.covariance)
                && a.score.bitPattern == b.score.bitPattern && a.correction.bitPattern == b.correction.bitPattern
        }
    }

    public var filters: [Filter]
    /// The applied inputs, newest first: inputs[0] = u of the last decision.
    public var inputs: [Double]
    /// Observations used so far.
    public var observations: Int64
    /// The filter the controller uses.
    public var selected: Int
    /// The previous statistic (for the differenced residual).
    public var lastObservation: Double
    /// The previous differenced residual.
    public var lastResidual: Double
    /// Discounted second moment and lag-1 moment of the differenced residual.
    public var residualMoment0: Double
    public var residualMoment1: Double
    /// Estimated σw² and σv².
    public var processVariance: Double
    public var measurementVariance: Double

    // Priors and forgetting. The priors are broad: b and c at 0.05 ± 0.1 nats per unit of
    // T - 1, g at 0 ± 0.02 nats per step, a at 0 ± 0.02 per step; L starts at the first
    // observation.
    static let priorMean = [0.0, 0.05, 0.05, 0.0, 0.0]
    static let priorVariance = [1.0, 0.01, 0.01, 4e-4, 4e-4]
    static let walk = (c: 2e-3, g: 3e-4, a: 1e-5)
    static let noiseFloor = 1e-6
    static let scoreDiscount = 0.97
    static let correctionDiscount = 0.95
    static let momentDiscount = 0.95
    static let switchMargin = 1.0
    /// The smallest per-step effect b the estimator holds: the physics sets its sign.
    static let bFloor = 1e-3
    /// Observations before the residual moments replace the initial noise guess.
    static let warmup: Int64 = 10

    public init() {
        filters = [false, true].flatMap { leaky in (0...Self.maxDelay).map { Self.prior(delay: $0, leaky: leaky) } }
        inputs = [Double](repeating: 0, count: Self.maxDelay + 1)
        observations = 0
        selected = 0
        lastObservation = 0
        lastResidual = 0
        residualMoment0 = 0
        residualMoment1 = 0
        processVariance = 1e-4
        measurementVariance = 1e-4
    }

    /// A filter that has seen nothing: the prior mean and covariance.
    static func prior(delay: Int, leaky: Bool) -> Filter {
        var p = [Double](repeating: 0, count: n * n)
        for i in 0..<(leaky ? n : n - 1) { p[i * n + i] = priorVariance[i] }
        return Filter(delay: delay, leaky: leaky, mean: priorMean, covariance: p, score: 0, correction: 0)
    }

    /// Records the input the coming step applies.
    public mutating func apply(_ u: Double) {
        for i in stride(from: inputs.count - 1, to: 0, by: -1) { inputs[i] = inputs[i - 1] }
        inputs[0] = u
    }

    /// The applied input `age` steps before the newest (0 before the run started).
    public func input(_ age: Int) -> Double { age < inputs.count ? inputs[age] : 0 }

    /// Updates every filter with the statistic of the step whose input was applied last.
    public mutating func observe(_ y: Double) {
        let uNow = input(0)
        let r = measurementVariance + Self.noiseFloor
        let qL = processVariance + Self.noiseFloor
        if observations == 0 {
            for i in filters.indices { filters[i].mean[0] = y - filters[i].mean[2] * uNow }
        } else {
            var restarted: [Int] = []
            for i in filters.indices {
                Self.update(&filters[i], y: y, yPrev: lastObservation, uNow: uNow, uDelayed: input(filters[i].delay),
                            r: r, qL: qL, first: observations == 1)
                if !filters[i].isFinite {
                    // Overflow (inputs near the largest double) or a covariance that is no
                    // longer positive semidefinite: the filter starts again from its prior
                    // at this observation, and ranks with the worst of the others.
                    filters[i] = Self.prior(delay: filters[i].delay, leaky: filters[i].leaky)
                    filters[i].mean[0] = y - filters[i].mean[2] * uNow
                    restarted.append(i)
                }
            }
            if !restarted.isEmpty {
                let kept = filters.indices.filter { !restarted.contains($0) }.map { filters[$0].score }
                let floor = kept.min() ?? 0
                for i in restarted { filters[i].score = floor }
            }
            var best = selected
            for i in filters.indices where filters[i].score > filters[best].score { best = i }
            if filters[best].score > filters[selected].score + Self.switchMargin { selected = best }

            let f = filters[selected]
            let du = uNow - input(1)
            let e = (y - lastObservation)
                - (f.mean[2] * du + f.mean[1] * input(f.delay) + f.mean[3] + f.mean[4] * lastObservation)
            let a = 1 - Self.momentDiscount
            if observations == 1 {
                residualMoment0 = e * e
            } else {
                residualMoment0 = Self.momentDiscount * residualMoment0 + a * e * e
                residualMoment1 = Self.momentDiscount * residualMoment1 + a * e * lastResidual
            }
            lastResidual = e.isFinite ? e : 0
            if !residualMoment0.isFinite || !residualMoment1.isFinite {
                // A residual beyond the range of a double: the moments start again.
                residualMoment0 = 0
                residualMoment1 = 0
            } else if observations > Self.warmup {
                measurementVariance = max(Self.noiseFloor, -residualMoment1)
                processVariance = max(Self.noiseFloor, residualMoment0 - 2 * measurementVariance)
            }
        }
        lastObservation = y
        observations = observations == Int64.max ? Int64.max : observations + 1
        if !isValid {
            // Last line of defence (a first observation beyond the range of a double): the
            // estimator starts again from this observation, keeping the applied inputs.
            let applied = inputs
            self = LoopEstimator()
            inputs = applied
            if y.isFinite { lastObservation = y }
        }
    }

    /// One Kalman step of one filter: predict with the applied inputs, then correct with y.
    /// The covariance update is in Joseph form, so it stays symmetric positive semidefinite;
    /// a filter that holds a at 0 keeps its variance at exactly 0.
    static func update(_ f: inout Filter, y: Double, yPrev: Double, uNow: Double, uDelayed: Double, r: Double,
                       qL: Double, first: Bool) {
        let n = Self.n
        var x = f.mean
        var p = f.covariance
        // Predict: L += uDelayed * b + g + yPrev * a, so F = I + e0 * phi^T.
        let phi = [0, uDelayed, 0, 1, yPrev]
        for j in 0..<n { x[0] += j == 0 ? 0 : phi[j] * f.mean[j] }
        var fp = p  // F * P: row 0 gains phi^T P
        for j in 0..<n {
            var acc = 0.0
            for l in 1..<n { acc += phi[l] * p[l * n + j] }
            fp[j] = p[j] + acc
        }
        for i in 0..<n {  // (F P) F^T: column 0 gains (F P) phi
            var acc = 0.0
            for l in 1..<n { acc += fp[i * n + l] * phi[l] }
            p[i * n] = fp[i * n] + acc
            for j in 1..<n { p[i * n + j] = fp[i * n + j] }
        }
        let qb = 0.01 * abs(x[1]) + 2e-4
        p[0] += qL
        p[1 * n + 1] += qb * qb
        p[2 * n + 2] += walk.c * walk.c
        p[3 * n + 3] += walk.g * walk.g
        if f.leaky { p[4 * n + 4] += walk.a * walk.a }

        // Correct with y = L + c * uNow: H = [1, 0, uNow, 0, 0].
        var ph = [Double](repeating: 0, count: n)  // P H^T
        for i in 0..<n { ph[i] = p[i * n] + uNow * p[i * n + 2] }
        let s = ph[0] + uNow * ph[2] + r
        guard s > 0, s.isFinite else {
            // Not positive: the covariance is no longer positive semidefinite. The caller
            // sees a non-finite filter and restarts it.
            f.score = .nan
            return
        }
        let nu = y - (x[0] + uNow * x[2])
        var k = [Double](repeating: 0, count: n)
        for i in 0..<n { k[i] = ph[i] / s }
        for i in 0..<n { x[i] += k[i] * nu }
        // Joseph form: (I - K H) P (I - K H)^T + K r K^T.
        var a = [Double](repeating: 0, count: n * n)  // I - K H
        for i in 0..<n {
            a[i * n + i] = 1
            a[i * n] -= k[i]
            a[i * n + 2] -= k[i] * uNow
        }
        var ap = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0..<n {
                var acc = 0.0
                for l in 0..<n { acc += a[i * n + l] * p[l * n + j] }
                ap[i * n + j] = acc
            }
        }
        for i in 0..<n {
            for j in i..<n {
                var acc = 0.0
                for l in 0..<n { acc += ap[i * n + l] * a[j * n + l] }
                acc += k[i] * r * k[j]
                p[i * n + j] = acc
                p[j * n + i] = acc
            }
        }
        // Raising the temperature of the regulariser raises entropy: b is kept >= bFloor
        // (projection of the estimate onto the constraint).
        x[1] = max(x[1], bFloor)
        f.mean = x
        f.covariance = p
        f.score = scoreDiscount * f.score - 0.5 * (log(s) + nu * nu / s)
        let corr = k[0] * nu
        f.correction = first ? corr * corr : correctionDiscount * f.correction + (1 - correctionDiscount) * corr * corr
    }

    /// Everything a filter or the estimator holds is finite, and the variances are >= 0.
    public var isValid: Bool {
        guard filters.count == Self.filterCount, inputs.count == Self.maxDelay + 1,
              selected >= 0, selected < filters.count, observations >= 0 else { return false }
        for (i, f) in filters.enumerated() {
            guard f.delay == i % (Self.maxDelay + 1), f.leaky == (i > Self.maxDelay), f.mean.count == Self.n,
                  f.covariance.count == Self.n * Self.n, f.isFinite else { return false }
            if !f.leaky && (f.mean[4] != 0 || f.covariance[24] != 0) { return false }
        }
        return inputs.allSatisfy(\.isFinite) && lastObservation.isFinite && lastResidual.isFinite
            && residualMoment0.isFinite && residualMoment0 >= 0 && residualMoment1.isFinite
            && processVariance.isFinite && processVariance >= 0
            && measurementVariance.isFinite && measurementVariance >= 0
    }

    public static func == (a: LoopEstimator, b: LoopEstimator) -> Bool {
        a.filters == b.filters && bitEqual(a.inputs, b.inputs) && a.observations == b.observations
            && a.selected == b.selected && a.lastObservation.bitPattern == b.lastObservation.bitPattern
            && a.lastResidual.bitPattern == b.lastResidual.bitPattern
            && a.residualMoment0.bitPattern == b.residualMoment0.bitPattern
            && a.residualMoment1.bitPattern == b.residualMoment1.bitPattern
            && a.processVariance.bitPattern == b.processVariance.bitPattern
            && a.measurementVariance.bitPattern == b.measurementVariance.bitPattern
    }
}

/// Bitwise equality of two arrays of doubles.
func bitEqual(_ a: [Double], _ b: [Double]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}
