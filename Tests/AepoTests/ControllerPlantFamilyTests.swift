import Foundation
import Glibc
@testable import AepoCore
import Testing

// Acceptance tests of the adaptive controller on the plant family of
// ControllerPlantFamily.swift. `AEPO_UPDATE_DOCS=1 swift test -c release --filter
// ControllerPlantFamily` regenerates the table in docs/CONTROLLER.md.

/// One row of the table: a plant and a target, with the default controller, the old
/// defaults and the best fixed PI of the grid (means over seeds 1-3).
struct FamilyRow: Sendable {
    var plant: String
    var target: String
    /// Constant targets only: the equilibrium temperature, nil when none in [t_min, t_max].
    var tStar: Double?
    /// A constant target whose T* lies in [t_min + 0.1, t_max - 0.1].
    var counted: Bool
    var defaultError: Double
    var defaultRateLimited: Double
    var defaultLag1: Double
    var oldError: Double
    var bestError: Double
    var bestKp: Double
    var bestKi: Double
    var bestEma: Double

    var bound: Double { max(0.03, 1.2 * bestError) }

    /// The three criteria of `defaultMeetsBounds`; empty when all hold.
    var violations: [String] {
        var v: [String] = []
        if !(defaultError <= bound) {
            v.append("error \(f4(defaultError)) > bound \(f4(bound)) (best PI \(f4(bestError)), "
                + "\(String(format: "%.2f", defaultError / bound))x the bound)")
        }
        if !(defaultRateLimited <= 0.10) {
            v.append("rate-limited \(String(format: "%.1f", 100 * defaultRateLimited))% > 10%")
        }
        if !(defaultLag1 > -0.5) {
            v.append("lag-1 autocorrelation of dT \(String(format: "%.3f", defaultLag1)) <= -0.5")
        }
        return v
    }
}

func f4(_ x: Double) -> String { x.isFinite ? String(format: "%.4f", x) : "\(x)" }

/// The gains as short decimals (0.125, 64, 0.5).
private func gain(_ x: Double) -> String {
    x == x.rounded() ? String(Int(x)) : "\(x)"
}

/// A fixed-point string without "-0.00".
private func fixed(_ x: Double, _ digits: Int) -> String {
    let s = String(format: "%.\(digits)f", x)
    return s.hasPrefix("-") && s.dropFirst().allSatisfy({ $0 == "0" || $0 == "." }) ? String(s.dropFirst()) : s
}

struct FamilyTable: Sendable {
    var rows: [FamilyRow]
    /// Configs that failed to run (should be empty).
    var failures: [String]
    var seconds: Double

    var markdown: String {
        var s = "| plant | target | T* | default err | rate-lim % | lag-1 ΔT | old err | best PI err | "
            + "kp / ki / ema | bound | ok |\n"
        s += "|---|---|---|---|---|---|---|---|---|---|---|\n"
        for r in rows {
            let tStar: String = r.target.first!.isNumber ? (r.tStar.map { fixed($0, 3) } ?? "–") : "–"
            let ok = r.counted ? (r.violations.isEmpty ? "✓" : "✗") : "–"
            s += "| \(r.plant) | \(r.target) | \(tStar) | \(f4(r.defaultError)) | "
                + "\(fixed(100 * r.defaultRateLimited, 1)) | \(fixed(r.defaultLag1, 2)) | \(f4(r.oldError)) | "
                + "\(f4(r.bestError)) | \(gain(r.bestKp)) / \(gain(r.bestKi)) / \(gain(r.bestEma)) | "
                + "\(f4(r.bound)) | \(ok) |\n"
        }
        return s
    }
}

/// The mean error, rate-limited fraction and lag-1 autocorrelation over the seeds.
private func meanOverSeeds(_ plant: FamilyPlant, _ config: ControllerConfig) throws(AepoFailure)
    -> (Double, Double, Double) {
    var e = 0.0, r = 0.0, a = 0.0
    for seed in FamilyControllers.seeds {
        let run = try plant.run(config, seed: seed, record: false)
        e += run.error
        r += run.rateLimited
        a += run.lag1
    }
    let n = Double(FamilyControllers.seeds.count)
    return (e / n, r / n, a / n)
}

/// Computes the whole table once (shared by the tests that need it): every plant x target,
/// the default, the old defaults and the 300 grid points, over 3 seeds. The jobs run on
/// all cores through `parallelRanges`; each writes only its own slot, so the result does
/// not depend on scheduling.
func computeFamilyTable() -> FamilyTable {
    let clock = ContinuousClock()
    let start = clock.now
    let plants = FamilyPlant.family
    let targets = FamilyTarget.all
    let grid = FamilyControllers.grid
    let perCase = 2 + grid.count
    let cases = plants.count * targets.count
    let jobs = cases * perCase

    func config(_ target: FamilyTarget, _ k: Int) -> ControllerConfig {
        switch k {
        case 0: return FamilyControllers.defaultConfig(target)
        case 1: return FamilyControllers.old(target)
        default:
            let g = grid[k - 2]
            return FamilyControllers.fixed(target, kp: g.kp, ki: g.ki, ema: g.ema)
        }
    }

    var results = [(Double, Double, Double)](repeating: (.nan, .nan, .nan), count: jobs)
    var errors = [String?](repeating: nil, count: jobs)
    let threads = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    results.withUnsafeMutableBufferPointer { res in
        errors.withUnsafeMutableBufferPointer { err in
            parallelRanges(count: jobs, threads: threads) { range in
                for j in range {
                    let c = j / perCase
                    let plant = plants[c / targets.count]
                    let target = targets[c % targets.count]
                    do {
                        res[j] = try meanOverSeeds(plant, config(target, j % perCase))
                    } catch {
                        err[j] = "\(plant.name) \(target.label) config \(j % perCase): \(error)"
                        res[j] = (.infinity, .infinity, 0)
                    }
                }
            }
        }
    }

    var rows: [FamilyRow] = []
    for (pi, plant) in plants.enumerated() {
        for (ti, target) in targets.enumerated() {
            let base = (pi * targets.count + ti) * perCase
            var best = 2
            for k in 3..<perCase where results[base + k].0 < results[base + best].0 { best = k }
            let g = grid[best - 2]
            var tStar: Double?
            var counted = false
            if let r = target.constant, let u = plant.equilibriumU(target: r) {
                tStar = 1 + u
                let a = ControllerConfig().adaptive
                counted = 1 + u >= a.tMin + 0.1 && 1 + u <= a.tMax - 0.1
            }
            rows.append(FamilyRow(
                plant: plant.name, target: target.label, tStar: tStar, counted: counted,
                defaultError: results[base].0, defaultRateLimited: results[base].1, defaultLag1: results[base].2,
                oldError: results[base + 1].0, bestError: results[base + best].0,
                bestKp: g.kp, bestKi: g.ki, bestEma: g.ema))
        }
    }
    let d = clock.now - start
    let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    print("plant family: \(plants.count) plants x \(targets.count) targets x \(perCase) controllers x "
        + "\(FamilyControllers.seeds.count) seeds = \(jobs * FamilyControllers.seeds.count) runs in "
        + String(format: "%.1f", seconds) + " s on \(threads) threads")
    return FamilyTable(rows: rows, failures: errors.compactMap { $0 }, seconds: seconds)
}

/// Computed on first use, once per test process.
let familyTable = computeFamilyTable()

/// docs/CONTROLLER.md, found from this file's path.
private let controllerDoc = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("docs/CONTROLLER.md")

private let beginMarker = "<!-- plant-table:begin -->\n"
private let endMarker = "<!-- plant-table:end -->"

/// Where the table goes in `doc`: from after the begin line to the start of the end line.
private func tableRegion(_ doc: String) -> Range<String.Index>? {
    guard let b = doc.range(of: beginMarker),
          let e = doc.range(of: endMarker, range: b.upperBound..<doc.endIndex) else { return nil }
    return b.upperBound..<e.lowerBound
}

/// The reachable constant target the unreachable test starts from and returns to.
private func homeTarget(_ plant: FamilyPlant) -> Double? {
    let a = ControllerConfig().adaptive
    for r in [0.8, 0.4, 1.2] {
        if let u = plant.equilibriumU(target: r), 1 + u >= a.tMin + 0.1, 1 + u <= a.tMax - 0.1 { return r }
    }
    return nil
}

@Suite struct ControllerPlantFamilyTests {
    /// A: the table in docs/CONTROLLER.md is the one this code generates (or, with
    /// AEPO_UPDATE_DOCS=1, is rewritten to it).
    @Test func tableIsCurrent() throws {
        let table = familyTable
        #expect(table.failures.isEmpty, "runs that threw: \(table.failures.prefix(10))")
        let text = table.markdown
        print(text)
        var doc = try String(contentsOf: controllerDoc, encoding: .utf8)
        let update = ProcessInfo.processInfo.environment["AEPO_UPDATE_DOCS"] == "1"
        guard let region = tableRegion(doc) else {
            Issue.record(Comment(rawValue: "docs/CONTROLLER.md has no \(beginMarker.dropLast()) ... \(endMarker) "
                + "region; add the section \"## Plant family results\" with both marker lines"))
            return
        }
        let current = String(doc[region])
        if current == text {
            print("table: docs/CONTROLLER.md is current (\(table.rows.count) rows)")
            return
        }
        if update {
            doc.replaceSubrange(region, with: text)
            try doc.write(to: controllerDoc, atomically: true, encoding: .utf8)
            print("table: rewrote the plant table in docs/CONTROLLER.md (\(table.rows.count) rows)")
            return
        }
        let have = current.split(separator: "\n", omittingEmptySubsequences: false)
        let want = text.split(separator: "\n", omittingEmptySubsequences: false)
        var diffs: [String] = []
        for i in 0..<max(have.count, want.count) {
            let h = i < have.count ? String(have[i]) : "<none>"
            let w = i < want.count ? String(want[i]) : "<none>"
            if h != w { diffs.append("line \(i + 1):\n  doc:  \(h)\n  now:  \(w)") }
        }
        print("table: \(diffs.count) lines differ from docs/CONTROLLER.md")
        Issue.record(Comment(rawValue: "the plant table in docs/CONTROLLER.md is stale (\(diffs.count) lines "
            + "differ; regenerate with AEPO_UPDATE_DOCS=1):\n" + diffs.prefix(20).joined(separator: "\n")))
    }

    /// B: on every counted constant target of every plant the default controller is within
    /// max(0.03, 1.2 x best PI), rarely on the rate limit, and does not chatter.
    @Test func defaultMeetsBounds() {
        let table = familyTable
        #expect(table.failures.isEmpty, "runs that threw: \(table.failures.prefix(10))")
        let counted = table.rows.filter(\.counted)
        var failing: [String] = []
        for r in counted where !r.violations.isEmpty {
            failing.append("\(r.plant) @ \(r.target) (T* \(fixed(r.tStar ?? .nan, 3))): "
                + r.violations.joined(separator: "; "))
        }
        print("B defaultMeetsBounds: \(counted.count - failing.count) of \(counted.count) counted cases pass, "
            + "\(failing.count) fail (\(table.rows.count - counted.count) rows not counted)")
        for f in failing { print("  B fail: \(f)") }
        #expect(counted.count >= 30, "only \(counted.count) counted constant targets")
        #expect(failing.isEmpty, Comment(rawValue: "\(failing.count) of \(counted.count) counted cases fail:\n"
            + failing.joined(separator: "\n")))
    }

    /// One unreachable excursion: `home` for 100 steps, `away` for 150, `home` again.
    struct Excursion {
        var plant: FamilyPlant
        var home: Double
        var away: Double
        var high: Bool
    }

    static func excursions() -> [Excursion] {
        let a = ControllerConfig().adaptive
        var out: [Excursion] = []
        for p in FamilyPlant.family {
            guard let home = homeTarget(p) else { continue }
            // Above what T = t_max holds in the steady state (3.0 nats, or more on plants
            // whose steady reach at t_max exceeds it).
            let reachHigh = p.steadyStatistic(u: a.tMax - 1)
            let away = max(3.0, reachHigh.isFinite ? ((reachHigh + 0.5) * 10).rounded(.up) / 10 : 3.0)
            out.append(Excursion(plant: p, home: home, away: away, high: true))
            // Below what T = t_min holds, where that is a positive statistic with room.
            let reachLow = p.steadyStatistic(u: a.tMin - 1)
            if reachLow.isFinite && reachLow >= 0.2 {
                out.append(Excursion(plant: p, home: home, away: ((reachLow - 0.15) * 20).rounded(.down) / 20,
                                     high: false))
            }
        }
        return out
    }

    /// C: against an unreachable target the controller sits at the bound and says so
    /// (reason `unreachable`), and it recovers once the target is reachable again.
    @Test func unreachableIsReportedAndRecovers() throws {
        let a = ControllerConfig().adaptive
        var failing: [String] = []
        var passing = 0
        var lines: [String] = []
        let cases = Self.excursions()
        for x in cases {
            let settle = x.plant.settlingTime()
            let limit = max(30, 2 * settle)
            let steps = 250 + limit + 20
            var c = ControllerConfig()
            c.mode = "adaptive"
            c.target = x.home
            c.schedule.kind = "piecewise"
            c.schedule.points = [SchedulePoint(step: 100, target: x.away), SchedulePoint(step: 250, target: x.home)]
            let bound = x.high ? a.tMax : a.tMin
            let dir = x.high ? "high" : "low"
            var problems: [String] = []
            var summary: [String] = []
            for seed in FamilyControllers.seeds {
                let run = try x.plant.run(c, seed: seed, steps: steps)
                let last = run.decisions[150..<250]
                let unreachable = last.filter { $0.reason == .unreachable }
                let atBound = last.filter { abs($0.temperature - bound) <= 1e-9 }
                let unreachableOffBound = unreachable.filter { abs($0.temperature - bound) > 1e-9 }
                // First step t >= 259 whose 10-step mean |S_clean - target| is below 0.05.
                var recovery: Int?
                for t in 259..<steps {
                    var m = 0.0
                    for k in (t - 9)...t { m += abs(run.clean[k] - run.decisions[k].target) }
                    if m / 10 < 0.05 {
                        recovery = t - 250 + 1
                        break
                    }
                }
                let fracU = Double(unreachable.count) / 100
                let fracB = Double(atBound.count) / 100
                let reasons = Dictionary(grouping: last, by: \.reason).map { "\($0.key.name) \($0.value.count)" }
                    .sorted().joined(separator: ", ")
                summary.append("seed \(seed): unreachable \(unreachable.count)%, at bound \(atBound.count)%, "
                    + "recovery \(recovery.map(String.init) ?? "none") steps")
                var p: [String] = []
                if fracU < 0.8 { p.append("reason unreachable on \(unreachable.count)% (< 80%; reasons: \(reasons))") }
                if fracB < 0.8 {
                    let meanT = last.map(\.temperature).reduce(0, +) / 100
                    p.append("T at \(bound) on \(atBound.count)% (< 80%; mean T \(fixed(meanT, 3)))")
                }
                if !unreachableOffBound.isEmpty {
                    p.append("\(unreachableOffBound.count) unreachable decisions off the bound")
                }
                if let r = recovery {
                    if r > limit { p.append("recovered after \(r) steps > \(limit)") }
                } else {
                    p.append("no recovery within \(steps - 250) steps (limit \(limit))")
                }
                if !p.isEmpty { problems.append("seed \(seed): " + p.joined(separator: "; ")) }
            }
            let head = "\(x.plant.name) \(dir) (home \(x.home), away \(x.away), settle \(settle), limit \(limit))"
            lines.append(head + ": " + summary.joined(separator: " | "))
            if problems.isEmpty {
                passing += 1
            } else {
                failing.append(head + ":\n    " + problems.joined(separator: "\n    "))
            }
        }
        print("C unreachableIsReportedAndRecovers: \(passing) of \(cases.count) excursions pass, "
            + "\(failing.count) fail (\(cases.filter { !$0.high }.count) low)")
        for l in lines { print("  C " + l) }
        #expect(cases.contains { !$0.high }, "no plant has an unreachable-low target")
        #expect(failing.isEmpty, Comment(rawValue: "\(failing.count) of \(cases.count) excursions fail:\n"
            + failing.joined(separator: "\n")))
    }

    /// Sanity checks of the family itself (ranges, determinism, reachability), so that a
    /// failure of B or C is about the controller, not the plants.
    @Test func familyIsWellFormed() throws {
        let plants = FamilyPlant.family
        #expect(plants.count >= 12)
        #expect(Set(plants.map(\.name)).count == plants.count)
        for p in plants {
            #expect((0...0.25).contains(p.c) && (0.005...0.3).contains(p.b) && (0...3).contains(p.delay)
                && (0...0.05).contains(p.sigmaW) && (0...0.05).contains(p.sigmaV) && p.leak >= 0, "\(p.name)")
            // The equilibrium holds the statistic at the target when replayed noise-free.
            if let u = p.equilibriumU(target: 0.8) {
                let h = 0.8 - p.c * u
                #expect(abs(p.push(u, h) - p.leak * (h - p.hRest)) < 1e-12, "\(p.name)")
            }
        }
        // Deterministic: the same run twice is bit-identical.
        let cfg = FamilyControllers.old(FamilyTarget.all[1])
        let r1 = try plants[12].run(cfg, seed: 2)
        let r2 = try plants[12].run(cfg, seed: 2)
        #expect(r1.decisions == r2.decisions && r1.clean == r2.clean)
        let reachable = plants.flatMap { p in
            FamilyTarget.all.compactMap(\.constant).filter { r in
                p.equilibriumU(target: r).map { $0 >= -0.4 && $0 <= 0.9 } ?? false
            }
        }
        print("family: \(plants.count) plants, \(reachable.count) of \(3 * plants.count) constant targets counted; "
            + "settling " + plants.map { "\($0.name) \($0.settlingTime())" }.joined(separator: ", "))
    }
}

/// Which rows to feed: a GRPO-like loop in which the whole-batch statistic carries the
/// regulariser's same-step response (c = 0.13), against the main-row statistic of the same
/// loop (c = 0), both under the default controller and the same noise. What a trainer wants
/// on target is the policy's entropy. Fed the whole batch, the controller holds the mixed
/// statistic there, and entropy sits off by c·u (the regulariser's own contribution) and
/// varies more; fed the main rows, it holds entropy itself (docs/CONTROLLER.md, "Feeding
/// the statistic").
@Suite struct ControllerStatisticRowsTests {
    @Test func mainRowsHoldEntropyCloserThanAllRows() throws {
        // One name, so both runs see the same noise.
        let all = FamilyPlant(name: "rows", about: "whole-batch statistic", c: 0.13, b: 0.01, delay: 0,
                              sigmaW: 0.005, sigmaV: 0.01, leak: 0.003)
        var main = all
        main.c = 0
        func entropyError(_ run: FamilyRun) -> Double {
            let half = run.entropy.count / 2
            var e = 0.0
            for t in half..<run.entropy.count { e += abs(run.entropy[t] - run.decisions[t].target) }
            return e / Double(run.entropy.count - half)
        }
        var line = "statistic rows, entropy error (all / main):"
        for target in [0.6, 1.0] {
            var ea = 0.0
            var em = 0.0
            for seed in FamilyControllers.seeds {
                var cfg = FamilyControllers.defaultConfig(FamilyTarget.all[0])
                cfg.target = target
                ea += entropyError(try all.run(cfg, seed: seed)) / Double(FamilyControllers.seeds.count)
                em += entropyError(try main.run(cfg, seed: seed)) / Double(FamilyControllers.seeds.count)
            }
            line += " \(target): \(ea) / \(em);"
            #expect(em <= 0.03, "target \(target): main rows \(em)")
            #expect(em < ea, "target \(target): main rows \(em) not closer than all rows \(ea)")
        }
        print(line)
    }
}
