// LayerNorm / RMSNorm / sphere as an exact map of the tracked state (CPU twin: model::norm).
// With c the (feature-centred) mean token, u_i the residual rows, s = e^l:
//   N(c + s u_i) - N(c) = s [u_i / s_i - c (2 cov_i + s v_i) / (s_i s0 (s_i + s0))]
// (the expansion, used while the residual is small next to the mean or eps), else the tokens are
// normalised directly. eps enters in the units of the state, eps e^{-2g}.

struct Params {
    n: u32, d: u32, batch: u32, ps: u32,
    // 0: layer, 1: rms, 2: sphere
    kind: u32, eps: f32, gain: f32, bias: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scal: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> pre: array<f32>;


@compute @workgroup_size(256)
fn normalise(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.x;
    let tid = lid.x;
    let n = p.n;
    let d = p.d;
    let base = b * (n + 1u) * d;
    let mrow = base + n * d;
    let g = scal[b * 4u];
    let l = scal[b * 4u + 1u];
    let centre = p.kind == 0u;
    var denom = f32(d);
    var eps = p.eps;
    if (p.kind == 2u) { denom = 1.0; eps = 0.0; }
    var mm = 0.0;
    if (centre) {
        for (var j = 0u; j < d; j++) { mm += x[mrow + j]; }
        mm = mm / f32(d);
    }
    var c2 = 0.0;
    for (var j = 0u; j < d; j++) { let c = x[mrow + j] - mm; c2 += c * c; }
    c2 = c2 / denom;
    var ln_eps = NEG;
    if (eps > 0.0 && !is_neg(g)) { ln_eps = log(eps) - 2.0 * g; }
    var lk = 0.0;
    if (ln_eps > 0.0) { lk = -0.5 * ln_eps; }
    let eps_hat = exp_or_zero(ln_eps + 2.0 * lk);
    let kk = exp(2.0 * lk);
    let s = exp_or_zero(l);
    let s0 = sqrt(kk * c2 + eps_hat);

    var vpart = 0.0;
    for (var i = tid; i < n; i += WG) {
        var ur = 0.0;
        if (centre) {
            for (var j = 0u; j < d; j++) { ur += x[base + i * d + j]; }
            ur = ur / f32(d);
        }
        var v = 0.0;
        for (var j = 0u; j < d; j++) { let u = x[base + i * d + j] - ur; v += u * u; }
        vpart = max(vpart, v / denom);
    }
    let vmax = reduce_max(tid, vpart);
    let expansion = kk * s * s * vmax <= s0 * s0 && s0 > 0.0;
    let dead = is_neg(g);

    for (var i = tid; i < n; i += WG) {
        let row = base + i * d;
        var ur = 0.0;
        if (centre) {
            for (var j = 0u; j < d; j++) { ur += x[row + j]; }
            ur = ur / f32(d);
        }
        if (dead) {
            for (var j = 0u; j < d; j++) { y[row + j] = 0.0; }
        } else if (expansion) {
            var cov = 0.0; var v = 0.0; var z2 = 0.0;
            for (var j = 0u; j < d; j++) {
                let u = x[row + j] - ur;
                let c = x[mrow + j] - mm;
                cov += c * u; v += u * u; z2 += (c + s * u) * (c + s * u);
            }
            cov = cov / denom; v = v / denom;
            var si2 = s0 * s0 + kk * (2.0 * s * cov + s * s * v);
            if (s > 1e-3) { si2 = z2 / denom * kk + eps_hat; }
            let si = sqrt(max(si2, 0.0));
            var corr = 0.0;
            if (si > 0.0) { corr = kk * (2.0 * cov + s * v) / (si * s0 * (si + s0)); }
            for (var j = 0u; j < d; j++) {
                var o = 0.0;
                if (si > 0.0) { o = p.gain * ((x[row + j] - ur) / si - (x[mrow + j] - mm) * corr); }
                y[row + j] = o;
            }
        } else {
            var z2 = 0.0;
            for (var j = 0u; j < d; j++) {
                let z = (x[mrow + j] - mm) + s * (x[row + j] - ur);
                z2 += z * z;
            }
            let si = sqrt(kk * z2 / denom + eps_hat);
            for (var j = 0u; j < d; j++) {
                var o = 0.0;
                if (si > 0.0) { o = p.gain * ((x[mrow + j] - mm) + s * (x[row + j] - ur)) / si; }
                y[row + j] = o;
            }
        }
    }
    // The mean row, and the scales of both parts.
    var lm = 0.0;
    var lr = lk;
    if (dead) {
        lr = NEG;
    } else if (expansion) {
        lr = lk + l;
        if (is_neg(l)) { lr = NEG; }
        if (p.bias == 0.0) { lm = lk; }
    }
    for (var j = tid; j < d; j += WG) {
        var mv = p.bias;
        if (!dead && expansion) {
            let part = p.gain * (x[mrow + j] - mm) / s0;
            if (p.bias == 0.0) { mv = part; } else { mv = p.bias + exp(lk) * part; }
        }
        y[mrow + j] = mv;
    }
    if (tid == 0u) {
        pre[b * p.ps] = 0.0;
        pre[b * p.ps + 1u] = lm;
        pre[b * p.ps + 2u] = lr;
    }
}
