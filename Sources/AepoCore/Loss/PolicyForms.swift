/// The per-token policy term of every mode, four tokens at a time, in float64.
///
/// Each form maps the log-prob x, the old log-prob o (with delta = x - o) and -A of four
/// tokens to the token loss l, its slope dl/dx, the lanes where that slope is the gradient
/// (`flows`), the lanes counted by pg_clipfrac and pg_clipfrac_lower, and the per-token
/// value whose mean is the ppo_kl metric. Masked lanes arrive with x = o = 0; the kernel
/// masks their results. The forms (verl `core_algos.py`, with lo = 1 - clip_ratio_low,
/// hi = 1 + clip_ratio_high):
///
/// | mode       | l                                          | dl/dx (where it flows)           | pg_clipfrac      | ppo_kl term |
/// |------------|--------------------------------------------|----------------------------------|------------------|-------------|
/// | vanilla    | PPO clip + dual clip on r = e^clamp(δ, ±20) | -A r, unclipped branch, \|δ\| <= 20 | L2 > L1          | -clamp(δ)   |
/// | gspo       | max(-A s, -A clamp(s, lo, hi)), s = row's   | -A s, unclipped and m_b <= 10    | L2 > L1          | -δ          |
/// | cispo      | -A sg(clamp(r, lo, hi)) x, r = e^clamp(δ, ±20) | -A clamp(r, lo, hi)           | r < lo or r > hi | -clamp(δ)   |
/// | gpg        | -A x                                       | -A                               | none             | -δ          |
/// | clip_cov   | max(L1, L2), 0 on selected tokens, r = e^δ | -A r, unclipped and not selected | selected         | -δ          |
/// | kl_cov     | -A r, + coef \|δ\| on selected tokens       | -A r (+ coef sign δ)             | none             | \|δ\|       |
///
/// gspo's s = e^min(m_b, 10) with m_b the mean log-ratio of the row (a constant of the row:
/// verl's sg(m_b) + x - sg(x)). pg_clipfrac_lower counts vanilla's dual clip only.
protocol PolicyForm {
    /// Advantages are loaded per token (otherwise the row's value is broadcast).
    static var perToken: Bool { get }
    /// The form reads the covariance selection (clip_cov, kl_cov).
    static var selects: Bool { get }
    /// The form can set `lower` (vanilla's dual clip).
    static var countsLower: Bool { get }
    static func terms(x: LossMath.V, o: LossMath.V, delta: LossMath.V, negA: LossMath.V, selected: LossMath.M,
                      _ k: FormConstants) -> PolicyTerms
}

extension PolicyForm {
    static var selects: Bool { false }
    static var countsLower: Bool { false }
}

/// Loop invariants of the forms.
struct FormConstants {
    var lo: LossMath.V
    var hi: LossMath.V
    var c: LossMath.V
    /// gspo: the row's ratio s, and whether its log is inside the clamp at 10.
    var rowRatio: LossMath.V
    var rowRatioFlows: LossMath.M
    /// kl_cov: ppo_kl_coef.
    var klCovCoef: LossMath.V
}

struct PolicyTerms {
    var loss: LossMath.V
    var slope: LossMath.V
    var flows: LossMath.M
    var clipped: LossMath.M
    var lower: LossMath.M
    var metric: LossMath.V
}

/// Where the advantage of a lane comes from.
protocol AdvantageSource { static var perToken: Bool { get } }
enum PerRowAdvantage: AdvantageSource { static var perToken: Bool { false } }
enum PerTokenAdvantage: AdvantageSource { static var perToken: Bool { true } }

// MARK: - vanilla

/// vanilla, for one sign case of the advantage (`VanillaForm`).
enum Vanilla<Sign: VanillaForm>: PolicyForm {
    static var perToken: Bool { Sign.perToken }
    static var countsLower: Bool { Sign.hasDual }
    @inline(__always)
    static func terms(x: LossMath.V, o: LossMath.V, delta: LossMath.V, negA: LossMath.V, selected: LossMath.M,
                      _ k: FormConstants) -> PolicyTerms {
        let d = LossMath.clamp(delta, LossMath.V(repeating: -20), LossMath.V(repeating: 20))
        let r = LossMath.exp(d)
        let t = Sign.apply(r: r, negA: negA, l3: negA * k.c, lo: k.lo, hi: k.hi)
        // The gradient flows through the unclipped ratio only, inside the log-ratio clamp
        // (d == delta: the clamp left it alone; false for NaN).
        var flows = (d .== delta) .& .!t.clipped
        if Sign.hasDual { flows = flows .& .!t.dual }
        return PolicyTerms(loss: t.loss, slope: t.l1, flows: flows, clipped: t.clipped, lower: t.dual, metric: -d)
    }
}

// MARK: - gspo

/// verl `compute_policy_loss_gspo`: the ratio of every token of row b is s_b = e^min(m_b, 10)
/// with m_b = sum_t M (x - o) / max(n_b, 1); the gradient of a token flows through its own
/// x only (x - sg(x) + sg(m_b)), and stops where the clamp at 10 is active.
enum Gspo<Adv: AdvantageSource>: PolicyForm {
    static var perToken: Bool { Adv.perToken }
    @inline(__always)
    static func terms(x: LossMath.V, o: LossMath.V, delta: LossMath.V, negA: LossMath.V, selected: LossMath.M,
                      _ k: FormConstants) -> PolicyTerms {
        let s = k.rowRatio
        let l1 = negA * s
        let l2 = negA * LossMath.clamp(s, k.lo, k.hi)
        let clipped = l2 .> l1
        var loss = l1
        loss.replace(with: l2, where: clipped)
        return PolicyTerms(loss: loss, slope: l1, flows: k.rowRatioFlows .& .!clipped, clipped: clipped,
                           lower: LossMath.M(repeating: false), metric: -delta)
    }
}

// MARK: - cispo

/// verl `compute_policy_loss_cispo`: l = -A sg(clamp(r, lo, hi)) x with r = e^clamp(δ, ±20);
/// the ratio is detached, so the gradient -A clamp(r, lo, hi) flows on every token.
enum Cispo<Adv: AdvantageSource>: PolicyForm {
    static var perToken: Bool { Adv.perToken }
    @inline(__always)
    static func terms(x: LossMath.V, o: LossMath.V, delta: LossMath.V, negA: LossMath.V, selected: LossMath.M,
                      _ k: FormConstants) -> PolicyTerms {
        let d = LossMath.clamp(delta, LossMath.V(repeating: -20), LossMath.V(repeating: 20))
        let r = LossMath.exp(d)
        let w = LossMath.clamp(r, k.lo, k.hi)
        let slope = negA * w
        return PolicyTerms(loss: slope * x, slope: slope, flows: LossMath.M(repeating: true),
                           clipped: (r .< k.lo) .| (r .> k.hi), lower: LossMath.M(repeating: false), metric: -d)
    }
}

// MARK: - gpg

/// verl `compute_policy_loss_gpg`: l = -A x.
enum Gpg<Adv: AdvantageSource>: PolicyForm {
    static var perToken: Bool { Adv.perToken }
    @inline(__always)
    static func terms(x: LossMath.V, o: LossMath.V, delta: LossMath.V, negA: LossMath.V, selected: LossMath.M,
                      _ k: FormConstants) -> PolicyTerms {
        PolicyTerms(loss: negA * x, slope: negA, flows: LossMath.M(repeating: true),
                    clipped: LossMath.M(repeating: false), lower: LossMath.M(repeating: false), metric: -delta)
    }
}

// MARK: - clip_cov and kl_cov

/// The ratio of the modes verl leaves unclamped, in float64: e^δ with δ held inside
/// [-708, 709], where e^δ is a normal double (verl's float32 overflows beyond δ = 88.7).
@inline(__always)
func wideRatio(_ delta: LossMath.V) -> LossMath.V {
    LossMath.exp(LossMath.clamp(delta, LossMath.V(repeating: -708), LossMath.V(repeating: 709)))
}

/// PPO's clip test of clip_cov (no dual clip, no log-ratio clamp): L1, L2 and L2 > L1. The
/// covariance selection and the token pass both use it, so they agree bit for bit on
/// which tokens the clip already took.
@inline(__always)
func clipCovBranches(delta: LossMath.V, negA: LossMath.V, lo: LossMath.V, hi: LossMath.V)
    -> (l1: LossMath.V, l2: LossMath.V, clipped: LossMath.M)
{
    let r = wideRatio(delta)
    let l1 = negA * r
    let l2 = negA * LossMath.clamp(r, lo, hi)
    return (l1, l2, l2 .> l1)
}

/// verl `compute_policy_loss_clip_cov`: max(L1, L2), times 0 on the selected tokens.
enum ClipCov<Adv: AdvantageSource>: PolicyForm {
    static var perToken: Bool { Adv.perToken }
    static var selects: Bool { true }
    @inline(__always)
    static func terms(x: LossMath.V, o: LossMath.V, delta: LossMath.V, negA: LossMath.V, selected: LossMath.M,
                      _ k: FormConstants) -> PolicyTerms {
        let b = clipCovBranches(delta: delta, negA: negA, lo: k.lo, hi: k.hi)
        var loss = b.l1
        loss.replace(with: b.l2, where: b.clipped)
        loss.replace(with: 0, where: selected)
        return PolicyTerms(loss: loss, slope: b.l1, flows: .!b.clipped .& .!selected, clipped: selected,
                           lower: LossMath.M(repeating: false), metric: -delta)
    }
}

/// verl `compute_policy_loss_kl_cov`: -A r, plus ppo_kl_coef |δ| on the selected tokens
/// (its slope sign(δ), 0 at δ = 0, as PyTorch's abs).
enum KlCov<Adv: AdvantageSource>: PolicyForm {
    static var perToken: Bool { Adv.perToken }
    static var selects: Bool { true }
    @inline(__always)
    static func terms(x: LossMath.V, o: LossMath.V, delta: LossMath.V, negA: LossMath.V, selected: LossMath.M,
                      _ k: FormConstants) -> PolicyTerms {
        let l1 = negA * wideRatio(delta)
        var absD = delta
        absD.replace(with: -delta, where: delta .< 0)
        var sign = LossMath.V()
        sign.replace(with: 1, where: delta .> 0)
        sign.replace(with: -1, where: delta .< 0)
        var loss = l1
        var slope = l1
        loss.replace(with: l1 + k.klCovCoef * absD, where: selected)
        slope.replace(with: l1 + k.klCovCoef * sign, where: selected)
        return PolicyTerms(loss: loss, slope: slope, flows: LossMath.M(repeating: true),
                           clipped: LossMath.M(repeating: false), lower: LossMath.M(repeating: false), metric: absD)
    }
}
