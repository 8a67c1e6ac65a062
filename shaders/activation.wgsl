// The MLP activation as an exact map: f(h + s r) = f(h) + s D with D computed directly
// (CPU twin: model::mlp::activate). ReLU by a case split on the signs; GELU(x) = x Phi(x) by
//   GELU(H + delta) - GELU(H) = delta [Phi(H + delta) + H mean_{[H, H + delta]} phi]
// with the mean of the density by 8-point Gauss-Legendre (|delta| <= 1) or erfc differences.

struct Params {
    n: u32, w: u32, batch: u32, ps: u32,
    // 0: relu, 1: gelu
    kind: u32, _p0: u32, _p1: u32, _p2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scal: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> pre: array<f32>;

// erfc with fractional error below 1.2e-7 everywhere (Chebyshev fit, Numerical Recipes).
fn erfc(xv: f32) -> f32 {
    let z = abs(xv);
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    if (xv >= 0.0) { return ans; }
    return 2.0 - ans;
}
fn cdf(v: f32) -> f32 { return 0.5 * erfc(-v * 0.70710678118654752); }
fn pdf(v: f32) -> f32 { return exp(-0.5 * v * v) * 0.3989422804014327; }
fn cdf_diff(a: f32, b: f32) -> f32 {
    let r = 0.70710678118654752;
    if (a >= 0.0 && b >= 0.0) { return 0.5 * (erfc(b * r) - erfc(a * r)); }
    if (a <= 0.0 && b <= 0.0) { return 0.5 * (erfc(-a * r) - erfc(-b * r)); }
    return cdf(a) - cdf(b);
}
fn gelu_slope(big: f32, delta: f32) -> f32 {
    if (abs(delta) <= 1.0) {
        let nodes = array<f32, 4>(0.1834346424956498, 0.525532409916329, 0.7966664774136267, 0.9602898564975363);
        let weights = array<f32, 4>(0.362683783378362, 0.3137066458778873, 0.2223810344533745, 0.1012285362903763);
        var avg = 0.0;
        for (var k = 0u; k < 4u; k++) {
            let t = 0.5 * nodes[k];
            avg += 0.5 * weights[k] * (pdf(big + delta * (0.5 + t)) + pdf(big + delta * (0.5 - t)));
        }
        return cdf(big + delta) + big * avg;
    }
    return cdf(big + delta) + big * cdf_diff(big + delta, big) / delta;
}

@compute @workgroup_size(64)
fn activate(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.z;
    let e = gid.x + gid.y * 65535u * 64u;
    let per = (p.n + 1u) * p.w;
    if (e >= per) { return; }
    let g = scal[b * 4u];
    let l = scal[b * 4u + 1u];
    let i = e / p.w;
    let j = e % p.w;
    let base = b * per;
    let h = x[base + p.n * p.w + j];
    var v = 0.0;
    if (!is_neg(g)) {
        if (p.kind == 0u) {
            if (i == p.n) {
                v = max(h, 0.0);
            } else {
                let r = x[base + e];
                let s = exp_or_zero(l);
                if (s == 0.0) {
                    if (h > 0.0) { v = r; } else if (h == 0.0) { v = max(r, 0.0); }
                } else {
                    let z = h + s * r;
                    if (h > 0.0 && z > 0.0) { v = r; }
                    else if (h > 0.0) { v = -h / s; }
                    else if (z > 0.0) { v = h / s + r; }
                }
            }
        } else {
            let eg = exp(min(g, 80.0));
            if (i == p.n) {
                v = h * cdf(eg * h);
            } else {
                let r = x[base + e];
                let unit = exp_or_zero(g + l);
                v = r * gelu_slope(eg * h, unit * r);
            }
        }
    }
    y[base + e] = v;
    if (e == 0u) {
        pre[b * p.ps] = g;
        pre[b * p.ps + 1u] = 0.0;
        pre[b * p.ps + 2u] = l;
    }
}
