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
/// the closed interval.
enum KLPenalty {
    typealias V = LossMath.V

    /// The value and d value / d logp of each lane.
    @inline(__always)
    static func evaluate(_ type: KLType, delta: V) -> (value: V, slope: V) {
        var value: V
        var slope: V
        switch type.base {
        case .k1:
            value = delta
            slope = V(repeating: 1)
        case .abs:
            value = delta
            value.replace(with: -delta, where: delta .< 0)
            slope = V()
            slope.replace(with: 1, where: delta .> 0)
            slope.replace(with: -1, where: delta .< 0)
        case .k2:
            value = 0.5 * delta * delta
            slope = delta
        case .k3:
            let neg = -delta
            let x = LossMath.clamp(neg, V(repeating: -20), V(repeating: 20))
            let ex = LossMath.exp(x)
            let raw = ex - x - 1
            value = raw
            value.replace(with: 10, where: raw .> 10)
            value.replace(with: -10, where: raw .< -10)
            slope = 1 - ex
            let pass = (neg .>= -20) .& (neg .<= 20) .& (raw .<= 10) .& (raw .>= -10)
            slope.replace(with: 0, where: .!pass)
        }
        if type.straightThrough { slope = delta }
        return (value, slope)
    }
}
