/// KL penalties between the policy and a reference, per token, with verl's clamps
/// (`kl_penalty_forward`). For delta = logp - ref_logp:
///
/// | type            | value                                              | d value / d logp            |
/// |-----------------|----------------------------------------------------|-----------------------------|
/// | k1, kl          | delta                                              | 1                           |
/// | abs             | abs(delta)                                         | sign(delta) (0 at 0)        |
/// | k2, mse         | delta^2 / 2                                        | delta                       |
/// | k3, low_var_kl  | x = clamp(-delta, -20, 20); clamp(e^x - x - 1, -10, 10) | 1 - e^x inside both clamps, else 0 |
/// | `<type>+`       | the value of `<type>`                              | delta (k2's gradient)       |
///
/// Clamp gradients follow PyTorch: a clamp passes the gradient where its input lies inside
/// the closed interval. Each estimator is its own type so the KL loop is specialised per
/// estimator, with no switch inside it.
protocol KLForm {
    /// False only for `KLNone`: the kernel then compiles without the term.
    static var active: Bool { get }
    static func evaluate(_ delta: LossMath.V) -> (value: LossMath.V, slope: LossMath.V)
}

extension KLForm {
    static var active: Bool { true }
}

/// No reference log-probs: no KL term.
enum KLNone: KLForm {
    static var active: Bool { false }
    @inline(__always)
    static func evaluate(_ delta: LossMath.V) -> (value: LossMath.V, slope: LossMath.V) { (LossMath.V(), LossMath.V()) }
}

enum KLk1: KLForm {
    @inline(__always)
    static func evaluate(_ delta: LossMath.V) -> (value: LossMath.V, slope: LossMath.V) {
        (delta, LossMath.V(repeating: 1))
    }
}

enum KLAbs: KLForm {
    @inline(__always)
    static func evaluate(_ delta: LossMath.V) -> (value: LossMath.V, slope: LossMath.V) {
        var value = delta
        value.replace(with: -delta, where: delta .< 0)
        var slope = LossMath.V()
        slope.replace(with: 1, where: delta .> 0)
        slope.replace(with: -1, where: delta .< 0)
        return (value, slope)
    }
}

enum KLk2: KLForm {
    @inline(__always)
    static func evaluate(_ delta: LossMath.V) -> (value: LossMath.V, slope: LossMath.V) {
        (0.5 * delta * delta, delta)
    }
}

enum KLk3: KLForm {
    @inline(__always)
    static func evaluate(_ delta: LossMath.V) -> (value: LossMath.V, slope: LossMath.V) {
        typealias V = LossMath.V
        let neg = -delta
        let x = LossMath.clamp(neg, V(repeating: -20), V(repeating: 20))
        let ex = LossMath.exp(x)
        let raw = ex - x - 1
        var value = raw
        value.replace(with: 10, where: raw .> 10)
        value.replace(with: -10, where: raw .< -10)
        var slope = 1 - ex
        let pass = (neg .>= -20) .& (neg .<= 20) .& (raw .<= 10) .& (raw .>= -10)
        slope.replace(with: 0, where: .!pass)
        return (value, slope)
    }
}
