import Glibc

/// The entropy target as a function of the training step (`controller.schedule`).
///
/// - `constant`: `controller.target` at every step.
/// - `linear`: `target` up to `start_step`, `end_target` from `end_step` on, and a straight
///   line in between. With `end_step == start_step` it is a single jump at that step.
/// - `cosine`: the same end points joined by a half cosine,
///   `target + (end_target - target) * (1 - cos(pi * f)) / 2` with
///   `f = (step - start_step) / (end_step - start_step)`.
/// - `piecewise`: each point's target holds from its step until the next point's step;
///   before the first point the target is `controller.target`.
///
/// Numerical properties: the value at or before `start_step` is exactly `target` and the
/// value at or after `end_step` is exactly `end_target` (no rounding at the end points);
/// every value lies between the two end targets (piecewise: is one of the given targets).
public struct TargetSchedule: Sendable, Equatable {
    public enum Kind: String, CaseIterable, ConfigChoice {
        case constant, linear, cosine, piecewise

        public static var spellings: [(name: String, value: Self)] { allCases.map { ($0.rawValue, $0) } }
    }

    public let kind: Kind
    public let start: Double
    public let end: Double
    public let startStep: Int64
    public let endStep: Int64
    /// Strictly increasing steps (the config schema guarantees it).
    public let points: [SchedulePoint]

    /// Expects a schedule that passed `ConfigSchema` (ordered points, end_step >= start_step
    /// for linear and cosine); only the kind is checked here.
    public init(target: Double, schedule s: ScheduleConfig) throws(AepoFailure) {
        self.kind = try Kind.parse(s.kind, key: "controller.schedule.kind")
        self.start = target
        self.end = s.endTarget
        self.startStep = s.startStep
        self.endStep = s.endStep
        self.points = s.points
    }

    /// The target of training step `step`.
    public func target(at step: Int64) -> Double {
        switch kind {
        case .constant:
            return start
        case .linear, .cosine:
            // end_step >= start_step, so `step >= endStep` also covers the single jump.
            if step >= endStep { return end }
            if step <= startStep { return start }
            // startStep < step < endStep: both differences are positive and exact in Int64.
            let f = Double(step - startStep) / Double(endStep - startStep)
            let w = kind == .linear ? f : (1 - cos(Double.pi * f)) / 2
            let v = start + (end - start) * w
            return min(max(v, min(start, end)), max(start, end))
        case .piecewise:
            // The last point whose step is <= `step` (binary search over increasing steps).
            var lo = 0
            var hi = points.count
            while lo < hi {
                let mid = lo + (hi - lo) / 2
                if points[mid].step <= step { lo = mid + 1 } else { hi = mid }
            }
            return lo == 0 ? start : points[lo - 1].target
        }
    }
}
