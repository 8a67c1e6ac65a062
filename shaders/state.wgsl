// The tracked state X = e^g (1 m^T + e^l R) of every sequence: rows 0..n-1 hold R, row n holds m,
// and scal[4 b..] = (g, l). Kernels that change a state write n + 1 rows Y in "pre" form (the
// residual rows uncentred, in column blocks with their own log scales, the mean row with one log
// scale) plus pre[ps b..] = (g, lm, lr_0, lr_1, ...); `compose` turns that into a state
// (the CPU twin is state::Tracked::compose).

struct Params {
    n: u32, w: u32, batch: u32, ps: u32,
    blocks: u32, block_w: u32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> pre: array<f32>;
@group(0) @binding(3) var<storage, read_write> scal: array<f32>;
@group(0) @binding(4) var<storage, read_write> colbuf: array<f32>;


@compute @workgroup_size(256)
fn compose(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.x;
    let tid = lid.x;
    let n = p.n;
    let w = p.w;
    let base = b * (n + 1u) * w;
    let mrow = base + n * w;
    let pb = b * p.ps;
    // colbuf[cb..cb + w]: column means of the residual rows; [cb + w..cb + 2w]: the new mean.
    let cb = b * 2u * w;
    let g = pre[pb];
    let lm = pre[pb + 1u];
    var big_l = NEG;
    for (var k = 0u; k < p.blocks; k++) { big_l = max(big_l, pre[pb + 2u + k]); }
    let has_res = !is_neg(big_l);
    let nf = f32(n);

    // Column means of the scaled residual rows (shifted: exact when all rows are equal).
    var part_max = 0.0;
    for (var j = tid; j < w; j += WG) {
        var c = 0.0;
        if (has_res) {
            let f = exp_or_zero(pre[pb + 2u + j / p.block_w] - big_l);
            let y0 = y[base + j] * f;
            var acc = 0.0;
            var comp = 0.0;
            for (var i = 0u; i < n; i++) { kahan_add(&acc, &comp, y[base + i * w + j] * f - y0); }
            c = y0 + acc / nf;
            for (var i = 0u; i < n; i++) { part_max = max(part_max, abs(y[base + i * w + j] * f - c)); }
        }
        colbuf[cb + j] = c;
    }
    let big = reduce_max(tid, part_max);
    var part_sq = 0.0;
    var comp_sq = 0.0;
    if (big > 0.0) {
        for (var j = tid; j < w; j += WG) {
            let f = exp_or_zero(pre[pb + 2u + j / p.block_w] - big_l);
            let c = colbuf[cb + j];
            for (var i = 0u; i < n; i++) {
                let v = (y[base + i * w + j] * f - c) / big;
                kahan_add(&part_sq, &comp_sq, v * v);
            }
        }
    }
    let sumsq = reduce_sum(tid, part_sq);

    // The mean: terms (lm, mean row) and (L, column mean), zero terms left out.
    var pm = 0.0;
    var pc = 0.0;
    for (var j = tid; j < w; j += WG) {
        pm += y[mrow + j] * y[mrow + j];
        pc += colbuf[cb + j] * colbuf[cb + j];
    }
    let m_sq = reduce_sum(tid, pm);
    let c_sq = reduce_sum(tid, pc);
    var lm_eff = NEG;
    if (m_sq > 0.0 && !is_neg(lm)) { lm_eff = lm; }
    var lc_eff = NEG;
    if (c_sq > 0.0 && has_res) { lc_eff = big_l; }
    let top_m = max(lm_eff, lc_eff);
    var pn = 0.0;
    for (var j = tid; j < w; j += WG) {
        var v = 0.0;
        if (!is_neg(lm_eff)) { v += y[mrow + j] * exp_or_zero(lm_eff - top_m); }
        if (!is_neg(lc_eff)) { v += colbuf[cb + j] * exp_or_zero(lc_eff - top_m); }
        colbuf[cb + w + j] = v;
        pn += v * v;
    }
    let norm_m = sqrt(reduce_sum(tid, pn));

    // The residual, scaled to |R|_F^2 = n.
    var lr = NEG;
    var factor = 0.0;
    if (has_res && big > 0.0) {
        let fro = big * sqrt(sumsq);
        lr = big_l + log(fro / sqrt(nf));
        factor = sqrt(nf) / fro;
    }
    var log_m = NEG;
    if (norm_m > 0.0 && !is_neg(top_m)) { log_m = top_m + log(norm_m); }
    let top = max(log_m, lr);
    let zero = is_neg(top);
    for (var j = tid; j < w; j += WG) {
        let c = colbuf[cb + j];
        var f = 0.0;
        if (has_res) { f = exp_or_zero(pre[pb + 2u + j / p.block_w] - big_l); }
        for (var i = 0u; i < n; i++) {
            var v = 0.0;
            if (!zero && factor > 0.0) { v = (y[base + i * w + j] * f - c) * factor; }
            y[base + i * w + j] = v;
        }
        var mv = 0.0;
        if (!zero && !is_neg(log_m)) { mv = colbuf[cb + w + j] * (exp_or_zero(log_m - top) / norm_m); }
        y[mrow + j] = mv;
    }
    if (tid == 0u) {
        if (zero) {
            scal[b * 4u] = NEG;
            scal[b * 4u + 1u] = NEG;
        } else {
            scal[b * 4u] = g + top;
            if (is_neg(lr)) { scal[b * 4u + 1u] = NEG; } else { scal[b * 4u + 1u] = lr - top; }
        }
    }
}

// a X + b F (skip connections) into Y in pre form, the scales combined by log-sum-exp.
struct SkipParams {
    n: u32, w: u32, batch: u32, ps: u32,
    a: f32, b: f32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> sp: SkipParams;
@group(0) @binding(1) var<storage, read> xa: array<f32>;
@group(0) @binding(2) var<storage, read> sa: array<f32>;
@group(0) @binding(3) var<storage, read> xf: array<f32>;
@group(0) @binding(4) var<storage, read> sf: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> spre: array<f32>;

@compute @workgroup_size(64)
fn skip(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.z;
    let e = gid.x + gid.y * 65535u * 64u;
    let per = (sp.n + 1u) * sp.w;
    if (e >= per) { return; }
    let ga = sa[b * 4u]; let la = sa[b * 4u + 1u];
    let gf = sf[b * 4u]; let lf = sf[b * 4u + 1u];
    var lga = NEG; var lgf = NEG;
    if (sp.a != 0.0 && !is_neg(ga)) { lga = ga + log(abs(sp.a)); }
    if (sp.b != 0.0 && !is_neg(gf)) { lgf = gf + log(abs(sp.b)); }
    let big_g = max(lga, lgf);
    var ra = NEG; var rf = NEG;
    if (!is_neg(lga) && !is_neg(la)) { ra = lga - big_g + la; }
    if (!is_neg(lgf) && !is_neg(lf)) { rf = lgf - big_g + lf; }
    let lr = max(ra, rf);
    let i = e / sp.w;
    var v = 0.0;
    if (!is_neg(big_g)) {
        if (i == sp.n) {
            if (!is_neg(lga)) { v += sign(sp.a) * exp_or_zero(lga - big_g) * xa[b * per + e]; }
            if (!is_neg(lgf)) { v += sign(sp.b) * exp_or_zero(lgf - big_g) * xf[b * per + e]; }
        } else if (!is_neg(lr)) {
            if (!is_neg(ra)) { v += sign(sp.a) * exp_or_zero(ra - lr) * xa[b * per + e]; }
            if (!is_neg(rf)) { v += sign(sp.b) * exp_or_zero(rf - lr) * xf[b * per + e]; }
        }
    }
    out[b * per + e] = v;
    if (e == 0u) {
        if (is_neg(big_g)) {
            spre[b * sp.ps] = 0.0;
        } else {
            spre[b * sp.ps] = big_g;
        }
        spre[b * sp.ps + 1u] = 0.0;
        spre[b * sp.ps + 2u] = lr;
    }
}
