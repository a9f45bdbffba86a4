import Glibc
@testable import AepoCore
import Testing

@Suite struct ControllerScheduleTests {
    private func schedule(_ kind: String, target: Double = 1.0, end: Double = 0.2, from: Int64 = 100,
                          to: Int64 = 200, points: [(Int64, Double)] = []) throws -> TargetSchedule {
        var s = ScheduleConfig()
        s.kind = kind
        s.endTarget = end
        s.startStep = from
        s.endStep = to
        s.points = points.map { SchedulePoint(step: $0.0, target: $0.1) }
        return try TargetSchedule(target: target, schedule: s)
    }

    @Test func constantIgnoresTheOtherKeys() throws {
        let s = try schedule("constant")
        for step: Int64 in [0, 99, 100, 150, 200, 1 << 40] { #expect(s.target(at: step) == 1.0) }
    }

    @Test func linearEndPointsAreExact() throws {
        let s = try schedule("linear")
        #expect(s.target(at: 0) == 1.0)
        #expect(s.target(at: 100) == 1.0)
        #expect(abs(s.target(at: 150) - 0.6) < 1e-15)
        #expect(abs(s.target(at: 125) - 0.8) < 1e-15)
        #expect(s.target(at: 200) == 0.2)
        #expect(s.target(at: Int64.max) == 0.2)
        var prev = 1.0
        for step: Int64 in 100...200 {
            let v = s.target(at: step)
            #expect(v <= prev && v >= 0.2 && v <= 1.0)
            prev = v
        }
    }

    @Test func cosineFollowsTheHalfCosine() throws {
        let s = try schedule("cosine")
        #expect(s.target(at: 100) == 1.0)
        #expect(abs(s.target(at: 150) - 0.6) < 1e-15)
        let quarter = 1.0 + (0.2 - 1.0) * (1 - cos(Double.pi / 4)) / 2
        #expect(abs(s.target(at: 125) - quarter) < 1e-15)
        #expect(s.target(at: 200) == 0.2)
    }

    @Test func equalStartAndEndIsOneJump() throws {
        for kind in ["linear", "cosine"] {
            let s = try schedule(kind, from: 100, to: 100)
            #expect(s.target(at: 99) == 1.0)
            #expect(s.target(at: 100) == 0.2)
        }
    }

    @Test func piecewiseHoldsEachTargetUntilTheNextPoint() throws {
        let s = try schedule("piecewise", target: 0.5, points: [(10, 0.3), (20, 0.7), (21, 0.1)])
        #expect(s.target(at: 0) == 0.5)
        #expect(s.target(at: 9) == 0.5)
        #expect(s.target(at: 10) == 0.3)
        #expect(s.target(at: 19) == 0.3)
        #expect(s.target(at: 20) == 0.7)
        #expect(s.target(at: 21) == 0.1)
        #expect(s.target(at: Int64.max) == 0.1)
        let first = try schedule("piecewise", target: 0.5, points: [(0, 0.9)])
        #expect(first.target(at: 0) == 0.9)
    }

    @Test func rejectsUnorderedPointsBackwardRangesAndUnknownKinds() throws {
        func rejected(_ edit: (inout ControllerConfig) -> Void, _ path: String) {
            var c = ControllerConfig.adaptive()
            edit(&c)
            do {
                _ = try Controller(c)
                Issue.record("accepted a schedule that \(path) should reject")
            } catch {
                #expect(error.kind == .config && error.argument == path, "\(error.message)")
            }
        }
        rejected({ $0 = $0.withPiecewise([(10, 0.3), (10, 0.7)]) }, "controller.schedule.points[1].step")
        rejected({ $0 = $0.withPiecewise([(10, 0.3), (4, 0.7)]) }, "controller.schedule.points[1].step")
        rejected({ $0 = $0.withPiecewise([]) }, "controller.schedule.points")
        rejected({ $0.schedule.kind = "linear"; $0.schedule.startStep = 200; $0.schedule.endStep = 100 },
                 "controller.schedule.end_step")
        rejected({ $0.schedule.kind = "stepwise" }, "controller.schedule.kind")
    }

    /// Decisions carry the target of their own step, and the step follows the argument.
    @Test func decisionsFollowTheStepArgument() throws {
        var c = ControllerConfig.bangBang(target: 0.5)
        c = c.withPiecewise([(10, 0.3), (20, 0.7)])
        var ctl = try Controller(c)
        #expect(ctl.decision.step == 0 && ctl.decision.target == 0.5)
        var d = try ctl.observe(.nll, value: 0.4)
        #expect(d.step == 1 && d.target == 0.5 && d.temperature == 1.2)
        d = try ctl.observe(.nll, value: 0.4, step: 9)  // skip ahead: step 9 finished
        #expect(d.step == 10 && d.target == 0.3 && d.temperature == 0.8)
        d = try ctl.observe(.nll, value: 0.4, step: 10)
        #expect(d.step == 11)
        d = try ctl.observe(.nll, value: 0.6, step: 19)
        #expect(d.step == 20 && d.target == 0.7 && d.temperature == 1.2)
        d = try ctl.observe(.nll, value: 0.6)
        #expect(d.step == 21)
    }
}
