import Glibc
@testable import AepoCore

/// Seeded standard normal draws for the controller tests: SplitMix64 for the bits, the
/// top 53 bits as a uniform in (0, 1], and Box-Muller for the pair of normals.
struct TestGaussian {
    private var state: UInt64
    private var spare: Double?

    init(seed: UInt64) { state = seed }

    mutating func nextBits() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    mutating func nextUniform() -> Double {
        Double((nextBits() >> 11) + 1) * 0x1p-53
    }

    mutating func next() -> Double {
        if let s = spare {
            spare = nil
            return s
        }
        let u1 = nextUniform()
        let u2 = nextUniform()
        let r = (-2 * log(u1)).squareRoot()
        let a = 2 * Double.pi * u2
        spare = r * sin(a)
        return r * cos(a)
    }
}

/// The fixed plant of issue 5, which the controller does not know:
///   w = k/k_max (k mode) or alpha/alpha_max (alpha mode), u = (T - 1) * w,
///   H[t+1] = H[t] - 0.02 (H[t] - 0.1) + 0.08 u (1.6 - H[t]) + 0.01 eps,  eps ~ N(0, 1),
///   the controller observes H + 0.02 u (the mixed-batch bias).
/// k mode assumes plenty of positives, so k = k_max, or floor(k_max / 2) when halving.
struct EntropyPlant {
    /// Which entropy the observation of step t reads: the one after the step's update
    /// (the statistic is measured during the actor update; the primary reading) or the
    /// one before it (a slower loop, used to check robustness).
    enum Reading { case afterUpdate, beforeUpdate }

    var reading: Reading = .afterUpdate
    var h0 = 0.5
    var steps = 400

    struct Run {
        var decisions: [ControllerDecision] = []
        var observed: [Double] = []
        var entropy: [Double] = []
        /// Mean |observed - target| over the second half of the run.
        var error = 0.0
    }

    /// Runs `steps` training steps; the controller sees only the observations.
    func run(_ config: ControllerConfig, seed: UInt64) throws -> Run {
        var ctl = try EntropyController(config)
        var rng = TestGaussian(seed: seed)
        var out = Run()
        var h = h0
        var errSum = 0.0
        for t in 0..<steps {
            let d = ctl.decision
            let w: Double
            if !d.alpha.isNaN {
                w = d.alpha / config.adaptive.alphaMax
            } else {
                let k = d.halve ? d.kMax / 2 : d.kMax
                w = Double(k) / Double(d.kMax)
            }
            let u = (d.temperature - 1) * w
            let next = h - 0.02 * (h - 0.1) + 0.08 * u * (1.6 - h) + 0.01 * rng.next()
            let y = (reading == .afterUpdate ? next : h) + 0.02 * u
            if t >= steps / 2 { errSum += abs(y - d.target) }
            out.decisions.append(d)
            out.observed.append(y)
            out.entropy.append(h)
            try ctl.observe(.nll, value: y)
            h = next
        }
        out.error = errSum / Double(steps - steps / 2)
        return out
    }
}

extension ControllerConfig {
    /// The adaptive controller with its default gains.
    static func adaptive(target: Double = 0.5) -> ControllerConfig {
        var c = ControllerConfig()
        c.mode = "adaptive"
        c.target = target
        return c
    }

    /// The reference rule at the given temperatures.
    static func bangBang(target: Double = 0.5, high: Double = 1.2, low: Double = 0.8) -> ControllerConfig {
        var c = ControllerConfig()
        c.mode = "bang_bang"
        c.target = target
        c.tHigh = high
        c.tLow = low
        return c
    }

    func withPiecewise(_ pts: [(Int64, Double)]) -> ControllerConfig {
        var c = self
        c.schedule.kind = "piecewise"
        c.schedule.points = pts.map { SchedulePoint(step: $0.0, target: $0.1) }
        return c
    }
}
