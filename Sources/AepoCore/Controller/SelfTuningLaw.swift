/// The self-tuning controller's gain rule and control law (docs/CONTROLLER.md,
/// "Self-tuning").
///
/// Law. With the estimator's L, b, c, g and delay d, and a horizon h = d + m (m >= 0 extra
/// steps), the actuator is the constant u that puts the predicted statistic h steps ahead
/// on the target, counting the inputs already on their way:
///
///     y_{t+h} = L + (h + 1)·(g + a·r) + b·(u_{t-1} + ... + u_{t-d}) + (b·(m + 1) + c)·u = r
///
/// (the level-dependent pull a·y is taken at the target r, where the loop is meant to be:
/// an estimate of L there would add its noise (h + 1) times over).
///
/// The law is cautious: while the estimate of the loop's response is vague it shrinks the
/// move toward neutral (below). It is positional: its only memory is the estimator, which
/// sees the inputs actually applied, so saturation and the rate limit cannot wind anything up, and it is at the
/// target in steady state whenever the estimator's predictions are unbiased (the drift g
/// is the integral action).
///
/// Gain rule. With a perfect estimate the closed loop has one pole at (μ - 1)/μ, where
/// μ = m + 1 + c/b >= 1 (c keeps its sign), and d poles at 0. If the true b is κ times the estimate and the true c
/// exceeds the estimate by ε·b, the characteristic polynomial is
///
///     μ z^{d+2} - (μ - 1 - ε) z^{d+1} - ε z^d + (κ - 1) z
///
/// (derivation in docs/CONTROLLER.md). The rule picks the smallest m for which this is
/// Schur stable at every corner of κ in {1, κ_req} × ε in {0, ε_req}, with
/// κ_req = 2·(1 + 2·σ_b/b) (a gain margin of 2 on top of two standard deviations of b)
/// and ε_req = 2·σ_c/b. It also keeps the noise-driven step of the actuator, the
/// estimator's per-step correction of L divided by the loop's denominator, at or below
/// t_rate / 2.75 (one standard deviation), so the rate limit is a safety net and not part
/// of the loop.
public enum SelfTuningLaw {
    /// Gain margin on b, on top of its uncertainty.
    static let gainMargin = 2.0
    /// Standard deviations of b and c the loop must tolerate.
    static let sigmas = 2.0
    /// The noise-driven actuator step stays below t_rate / rateSigmas (one sd).
    static let rateSigmas = 2.75
    /// Caps on the required margins and on the horizon, so that an estimate with no
    /// information gives a slow loop rather than an infinite one.
    static let marginCap = 50.0
    static let horizonCap = 1e4

    /// The derived gains for one decision.
    public struct Design: Sendable, Equatable {
        /// The delay the design assumes.
        public var delay: Int
        /// Extra steps m beyond the delay.
        public var horizon: Double
        /// The loop's denominator b·(m + 1) + c >= b: the statistic's predicted move per
        /// unit of T - 1 held over the horizon. Its inverse is the proportional gain in T
        /// per nat.
        public var denominator: Double
        /// Confidence in b, b / (b + 2 σ_b), in (0, 1].
        public var confidence: Double
        public var b: Double
        public var c: Double
    }

    /// The gains for the estimator's current state and the rate limit `tRate`.
    public static func design(_ est: LoopEstimator, tRate: Double) -> Design {
        let f = est.filters[est.selected]
        let n = LoopEstimator.n
        // The estimator keeps b at or above its floor; a restored state is held to it too.
        let b = max(f.mean[1], LoopEstimator.bFloor)
        // c keeps its sign: a delay of one step is indistinguishable from no delay with
        // c - b in place of c, and the law must use the c of the model the filter fitted.
        let c = f.mean[2]
        let sb = max(f.covariance[1 * n + 1], 0).squareRoot()
        let sc = max(f.covariance[2 * n + 2], 0).squareRoot()
        let kappa = min(marginCap, gainMargin * (1 + sigmas * sb / b))
        let eps = min(marginCap, sigmas * sc / b)
        let step = f.correction.squareRoot()
        // m >= 0, mu = m + 1 + c/b >= 1 (the law always moves the way its model says), and
        // the noise limit.
        let mSign = max(0, -c / b)
        let mNoise = min(horizonCap, max(mSign, (rateSigmas * step / tRate - c) / b - 1))
        let base = 1 + c / b + mNoise
        var extra = 0.0
        if !robust(delay: f.delay, mu: base, kappa: kappa, eps: eps) {
            var lo = 0.0
            var hi = 1.0
            while !robust(delay: f.delay, mu: base + hi, kappa: kappa, eps: eps) && hi < horizonCap { hi *= 2 }
            for _ in 0..<40 {
                let mid = 0.5 * (lo + hi)
                if robust(delay: f.delay, mu: base + mid, kappa: kappa, eps: eps) { hi = mid } else { lo = mid }
            }
            extra = hi
        }
        let m = mNoise + extra
        return Design(delay: f.delay, horizon: m, denominator: b * (m + 1) + c, confidence: b / (b + sigmas * sb),
                      b: b, c: c)
    }

    /// The unclamped actuator that puts the predicted statistic on `target` after the
    /// horizon of `design`, made cautious: with the loop's denominator D uncertain
    /// (sd σ_D from the covariance of b and c), the u that minimises the expected squared
    /// miss is D·(r - A)/(D² + σ_D²), which shrinks toward neutral while the estimate is
    /// vague and is the plain law once it is sharp.
    public static func actuator(_ est: LoopEstimator, _ design: Design, target: Double) -> Double {
        let f = est.filters[est.selected]
        let n = LoopEstimator.n
        let d = design.delay
        var pipe = 0.0
        for i in 0..<d { pipe += est.input(i) }
        let h = Double(d) + design.horizon
        let free = f.mean[0] + (h + 1) * (f.mean[3] + f.mean[4] * target) + design.b * pipe
        let w = design.horizon + 1
        let varD = max(0, w * w * f.covariance[1 * n + 1] + f.covariance[2 * n + 2] + 2 * w * f.covariance[1 * n + 2])
        let den = design.denominator
        return den * (target - free) / (den * den + varD)
    }

    /// The steps ahead at which the law aims (the schedule is read there).
    public static func lookahead(_ design: Design) -> Int64 {
        Int64(min(Double(design.delay) + design.horizon, 1e6).rounded())
    }

    /// Robust stability at the corners of the uncertainty box.
    static func robust(delay d: Int, mu: Double, kappa: Double, eps: Double) -> Bool {
        for k in [1.0, kappa] {
            for e in [0.0, eps] where !schurStable(loopPolynomial(delay: d, mu: mu, kappa: k, eps: e)) {
                return false
            }
        }
        return true
    }

    /// Coefficients, highest power first, of
    /// μ z^{d+2} - (μ - 1 - ε) z^{d+1} - ε z^d + (κ - 1) z.
    static func loopPolynomial(delay d: Int, mu: Double, kappa: Double, eps: Double) -> [Double] {
        var byPower = [Double](repeating: 0, count: d + 3)
        byPower[d + 2] += mu
        byPower[d + 1] -= mu - 1 - eps
        byPower[d] -= eps
        byPower[1] += kappa - 1
        return byPower.reversed()
    }

    /// True when every root of the real polynomial (highest power first) lies strictly
    /// inside the unit circle: the Schur–Cohn reduction, which lowers the degree by one per
    /// step while the leading coefficient dominates the constant one.
    static func schurStable(_ coefficients: [Double]) -> Bool {
        var a = coefficients
        while a.count > 1 {
            let an = a[0]
            let a0 = a[a.count - 1]
            if !(abs(an) > abs(a0)) { return false }
            let n = a.count - 1
            var reduced = [Double](repeating: 0, count: n)
            for i in 0..<n { reduced[i] = an * a[i] - a0 * a[n - i] }
            // Rescale to keep the magnitudes away from overflow and underflow.
            let scale = reduced.reduce(0) { max($0, abs($1)) }
            if !(scale > 0) || !scale.isFinite { return false }
            a = reduced.map { $0 / scale }
        }
        return true
    }
}
