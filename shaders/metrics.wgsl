// Per-layer, per-sequence metric ingredients from the tracked state (CPU twin: metrics/state.rs).
// `cosines`: partial sums of |cos| over token pairs, one per 64-row tile. `metrics`: one
// workgroup per sequence; writes raw[b, layer, 0..16] =
//   (g, l, |m|^2, ln|R|_{1,inf}, ln|X/e^g|_{1,inf}, lambda_1(G), |C|_F^2, m^T C m, lambda_1(C),
//    ln sigma_2^2, ln scale^2 it is resolved against, mean |cos|, entropy, -, -, -)
// with C = R^T R (from linear.wgsl `gram`) and G = n m m^T + s^2 C = (X/e^g)^T (X/e^g).

struct Params {
    n: u32, d: u32, batch: u32, tiles: u32,
    // cut_hook: layer + 1 at which the canary reports a cut (test hook; 0 = never).
    layer: u32, layers: u32, has_attn: u32, cut_hook: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scal: array<f32>;
@group(0) @binding(3) var<storage, read_write> parts: array<f32>;


fn dense(base: u32, i: u32, j: u32, s: f32) -> f32 {
    return x[base + p.n * p.d + j] + s * x[base + i * p.d + j];
}

var<workgroup> cred: array<f32, 64>;

// Sum over j > i of |cos(x_i, x_j)| for the 64 rows of this tile.
@compute @workgroup_size(64)
fn cosines(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.z;
    let i = wg.x * 64u + lid.x;
    let n = p.n;
    let d = p.d;
    let base = b * (n + 1u) * d;
    let s = exp_or_zero(scal[b * 4u + 1u]);
    var total = 0.0;
    if (i < n) {
        var ni = 0.0;
        for (var k = 0u; k < d; k++) { let v = dense(base, i, k, s); ni += v * v; }
        for (var j = i + 1u; j < n; j++) {
            var dot = 0.0; var nj = 0.0;
            for (var k = 0u; k < d; k++) {
                let a = dense(base, i, k, s);
                let c = dense(base, j, k, s);
                dot += a * c; nj += c * c;
            }
            if (ni > 0.0 && nj > 0.0) { total += min(abs(dot) / sqrt(ni * nj), 1.0); }
        }
    }
    cred[lid.x] = total;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st = st / 2u) {
        if (lid.x < st) { cred[lid.x] = cred[lid.x] + cred[lid.x + st]; }
        workgroupBarrier();
    }
    if (lid.x == 0u) { parts[b * p.tiles + wg.x] = cred[0]; }
}

@group(0) @binding(4) var<storage, read> cmat: array<f32>;
@group(0) @binding(5) var<storage, read_write> vecs: array<f32>;
@group(0) @binding(6) var<storage, read> ent: array<f32>;
@group(0) @binding(7) var<storage, read_write> raw: array<f32>;

var<workgroup> flag: u32;

// A condition every invocation computes alike, made uniform for the analysis (barriers follow).
fn agree(tid: u32, v: bool) -> bool {
    if (tid == 0u) { flag = select(0u, 1u, v); }
    return workgroupUniformLoad(&flag) == 1u;
}

// dst = M src on the d-vectors at offsets (in vecs) src and dst, for
// M = C (mode 0), G = n m m^T + s2 C (mode 1), P (C - t w w^T) P on u-perp (mode 2, w at vw,
// u at vu, P = I - u u^T). Mode 2 projects src too, as the CPU does: a Lanczos vector normalised
// from a small residual carries rounding along u, which C (whose u^T C u is large) would turn
// into a spurious Ritz value.
fn apply(b: u32, tid: u32, mode: u32, src: u32, dst: u32, s2: f32, t: f32, vu: u32, vw: u32) {
    let d = p.d;
    let cb = b * d * d;
    let mrow = b * (p.n + 1u) * d + p.n * d;
    var su = 0.0;
    if (mode == 2u) {
        var ps = 0.0;
        for (var j = tid; j < d; j += WG) { ps += vecs[vu + j] * vecs[src + j]; }
        su = reduce_sum(tid, ps);
    }
    var pm = 0.0;
    var pw = 0.0;
    for (var j = tid; j < d; j += WG) {
        let v = select(vecs[src + j], vecs[src + j] - su * vecs[vu + j], mode == 2u);
        pm += x[mrow + j] * v;
        pw += vecs[vw + j] * v;
    }
    let mv = reduce_sum(tid, pm);
    let wv = reduce_sum(tid, pw);
    for (var j = tid; j < d; j += WG) {
        var acc = 0.0;
        if (mode == 2u) {
            for (var k = 0u; k < d; k++) { acc += cmat[cb + j * d + k] * (vecs[src + k] - su * vecs[vu + k]); }
        } else {
            for (var k = 0u; k < d; k++) { acc += cmat[cb + j * d + k] * vecs[src + k]; }
        }
        if (mode == 1u) { acc = s2 * acc + f32(p.n) * mv * x[mrow + j]; }
        if (mode == 2u) { acc -= t * wv * vecs[vw + j]; }
        vecs[dst + j] = acc;
    }
    storageBarrier();
    workgroupBarrier();
    if (mode == 2u) {
        var pu = 0.0;
        for (var j = tid; j < d; j += WG) { pu += vecs[vu + j] * vecs[dst + j]; }
        let cu = reduce_sum(tid, pu);
        for (var j = tid; j < d; j += WG) { vecs[dst + j] -= cu * vecs[vu + j]; }
        storageBarrier();
        workgroupBarrier();
    }
}

fn dotv(tid: u32, a: u32, c: u32) -> f32 {
    var acc = 0.0;
    for (var j = tid; j < p.d; j += WG) { acc += vecs[a + j] * vecs[c + j]; }
    return reduce_sum(tid, acc);
}

// Lanczos on M with full reorthogonalisation (twice), from the start vector at `basis` (in u-perp
// for mode 2): at most KMAX steps, each basis vector kept at basis + k d. The Ritz values come
// from the tridiagonal matrix by Sturm bisection; every invocation holds the same coefficients
// (they come out of the reductions), so every invocation computes the same values.
// Returns (top Ritz value, second Ritz value or 0).
const KMAX: u32 = 32u;
fn lanczos(b: u32, tid: u32, mode: u32, basis: u32, tmp: u32, s2: f32, t: f32, vu: u32, vw: u32) -> vec2<f32> {
    let d = p.d;
    var alpha: array<f32, 32>;
    var beta: array<f32, 32>;
    let nv = sqrt(dotv(tid, basis, basis));
    for (var j = tid; j < d; j += WG) { if (nv > 0.0) { vecs[basis + j] = vecs[basis + j] / nv; } }
    storageBarrier();
    workgroupBarrier();
    var steps = 0u;
    var scale = 0.0;
    // Mode 2 works on u-perp, of dimension d - 1: a d-th vector would be rounding noise.
    let kmax = min(KMAX, select(d, d - 1u, mode == 2u));
    for (var k = 0u; k < kmax; k++) {
        let vk = basis + k * d;
        apply(b, tid, mode, vk, tmp, s2, t, vu, vw);
        alpha[k] = dotv(tid, vk, tmp);
        for (var rep = 0u; rep < 2u; rep++) {
            for (var i = 0u; i <= k; i++) {
                let c = dotv(tid, basis + i * d, tmp);
                for (var j = tid; j < d; j += WG) { vecs[tmp + j] -= c * vecs[basis + i * d + j]; }
                storageBarrier();
                workgroupBarrier();
            }
        }
        steps = k + 1u;
        scale = max(scale, abs(alpha[k]) + select(0.0, beta[max(k, 1u) - 1u], k > 0u));
        let bk = sqrt(dotv(tid, tmp, tmp));
        beta[k] = bk;
        if (bk <= 1e-6 * scale || k + 1u == kmax) { break; }
        for (var j = tid; j < d; j += WG) { vecs[basis + (k + 1u) * d + j] = vecs[tmp + j] / bk; }
        storageBarrier();
        workgroupBarrier();
    }
    // The two largest eigenvalues of the steps x steps tridiagonal matrix (Sturm bisection).
    var lo = 0.0;
    var hi = 0.0;
    for (var i = 0u; i < steps; i++) {
        var off = 0.0;
        if (i > 0u) { off += abs(beta[i - 1u]); }
        if (i + 1u < steps) { off += abs(beta[i]); }
        if (i == 0u) { lo = alpha[i] - off; hi = alpha[i] + off; }
        lo = min(lo, alpha[i] - off);
        hi = max(hi, alpha[i] + off);
    }
    var out = vec2<f32>(0.0, 0.0);
    for (var which = 1u; which <= min(2u, steps); which++) {
        var a = lo;
        var z = hi;
        for (var it = 0u; it < 64u; it++) {
            let mid = 0.5 * (a + z);
            // Number of eigenvalues above mid.
            var above = 0u;
            var q = 1.0;
            for (var i = 0u; i < steps; i++) {
                var off2 = 0.0;
                if (i > 0u) { off2 = beta[i - 1u] * beta[i - 1u]; }
                q = alpha[i] - mid - off2 / q;
                if (q == 0.0) { q = 1e-30; }
                if (q > 0.0) { above++; }
            }
            if (above >= which) { a = mid; } else { z = mid; }
        }
        out[which - 1u] = 0.5 * (a + z);
    }
    return out;
}

fn start_vector(tid: u32, at: u32) {
    for (var j = tid; j < p.d; j += WG) {
        vecs[at + j] = 1.0 + 0.5 * fract(f32(j) * 0.6180339887);
    }
    storageBarrier();
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn metrics(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.x;
    let tid = lid.x;
    let n = p.n;
    let d = p.d;
    let nf = f32(n);
    let base = b * (n + 1u) * d;
    let g = scal[b * 4u];
    let l = scal[b * 4u + 1u];
    let s = exp_or_zero(l);
    let s2 = s * s;
    let out = (b * p.layers + p.layer) * 16u;

    var pm = 0.0;
    var colr = 0.0; var colx = 0.0;
    for (var j = tid; j < d; j += WG) {
        let m = x[base + n * d + j];
        pm += m * m;
        var cr = 0.0; var cx = 0.0;
        for (var i = 0u; i < n; i++) { cr += abs(x[base + i * d + j]); cx += abs(dense(base, i, j, s)); }
        colr = max(colr, cr); colx = max(colx, cx);
    }
    var rowr = 0.0; var rowx = 0.0;
    for (var i = tid; i < n; i += WG) {
        var rr = 0.0; var rx = 0.0;
        for (var j = 0u; j < d; j++) { rr += abs(x[base + i * d + j]); rx += abs(dense(base, i, j, s)); }
        rowr = max(rowr, rr); rowx = max(rowx, rx);
    }
    let m2 = reduce_sum(tid, pm);
    let cr = reduce_max(tid, colr);
    let cx = reduce_max(tid, colx);
    let rr = reduce_max(tid, rowr);
    let rx = reduce_max(tid, rowx);

    // |C|_F^2 and m^T C m.
    var pf = 0.0; var pc = 0.0;
    for (var j = tid; j < d; j += WG) {
        var cm = 0.0;
        for (var k = 0u; k < d; k++) {
            let c = cmat[b * d * d + j * d + k];
            pf += c * c;
            cm += c * x[base + n * d + k];
        }
        pc += cm * x[base + n * d + j];
    }
    let fro2 = reduce_sum(tid, pf);
    let mcm = reduce_sum(tid, pc);

    var pcos = 0.0;
    for (var t = tid; t < p.tiles; t += WG) { pcos += parts[b * p.tiles + t]; }
    let cos_sum = reduce_sum(tid, pcos);
    var pent = 0.0;
    if (p.has_attn == 1u) { for (var i = tid; i < n; i += WG) { pent += ent[b * n + i]; } }
    let ent_sum = reduce_sum(tid, pent);

    // Spectra. Vectors: u at 0, w at d, tmp at 2d, the Lanczos basis from 3d (KMAX vectors).
    let vb = b * (KMAX + 3u) * d;
    let vu = vb; let vw = vb + d; let tmp = vb + 2u * d; let basis = vb + 3u * d;
    var lam_g = 0.0;
    var lam_c = 0.0;
    var lsig2 = NEG;
    var lscale = 0.0;
    let live = agree(tid, !is_neg(g));
    var top_g = vec2<f32>(0.0, 0.0);
    if (live) {
        start_vector(tid, basis);
        top_g = lanczos(b, tid, 1u, basis, tmp, s2, 0.0, vu, vw);
        lam_g = top_g.x;
    }
    if (agree(tid, live && !is_neg(l))) {
        start_vector(tid, basis);
        lam_c = lanczos(b, tid, 0u, basis, tmp, 0.0, 0.0, vu, vw).x;
        if (agree(tid, s2 > m2 / 4.0 || m2 == 0.0)) {
            // Direct: the second eigenvalue of G.
            lsig2 = ln_or_neg(top_g.y);
            lscale = log(nf * (m2 + s2));
        } else {
            // The mean dominates: lambda_2(G) = s^2 x, x the top eigenvalue of
            // P C P - t (P C u)(P C u)^T on u-perp, t = (s^2/beta) / (1 + (s^2/beta)(u^T C u - x)).
            let inv = 1.0 / sqrt(m2);
            for (var j = tid; j < d; j += WG) { vecs[vu + j] = x[base + n * d + j] * inv; vecs[vw + j] = 0.0; }
            storageBarrier();
            workgroupBarrier();
            apply(b, tid, 0u, vu, vw, 0.0, 0.0, vu, vw);
            let ucu = dotv(tid, vu, vw);
            for (var j = tid; j < d; j += WG) { vecs[vw + j] -= ucu * vecs[vu + j]; }
            storageBarrier();
            workgroupBarrier();
            let q = exp_or_zero(2.0 * l - log(nf * m2));
            var xv = 0.0;
            // The fixed point x = top eigenvalue at t(x), to convergence as on the CPU.
            for (var outer = 0u; outer < 20u; outer++) {
                let t = q / (1.0 + q * (ucu - xv));
                start_vector(tid, basis);
                let c = dotv(tid, vu, basis);
                for (var j = tid; j < d; j += WG) { vecs[basis + j] -= c * vecs[vu + j]; }
                storageBarrier();
                workgroupBarrier();
                let next = lanczos(b, tid, 2u, basis, tmp, 0.0, t, vu, vw).x;
                let done = abs(next - xv) <= 1e-6 * abs(next);
                xv = next;
                if (agree(tid, done)) { break; }
            }
            lsig2 = 2.0 * l + ln_or_neg(xv);
            if (xv <= 0.0) { lsig2 = NEG; }
            lscale = 2.0 * l + log(nf);
        }
    }
    if (tid == 0u) {
        raw[out] = g;
        raw[out + 1u] = l;
        raw[out + 2u] = m2;
        raw[out + 3u] = 0.5 * (ln_or_neg(cr) + ln_or_neg(rr));
        raw[out + 4u] = 0.5 * (ln_or_neg(cx) + ln_or_neg(rx));
        raw[out + 5u] = lam_g;
        raw[out + 6u] = fro2;
        raw[out + 7u] = mcm;
        raw[out + 8u] = lam_c;
        raw[out + 9u] = lsig2;
        raw[out + 10u] = lscale;
        raw[out + 11u] = cos_sum / (f32(n) * f32(n - 1u) / 2.0);
        raw[out + 12u] = ent_sum / nf;
        raw[out + 13u] = 0.0;
        raw[out + 14u] = 0.0;
        let ran = loops_ran(max(p.d, 2u)) && p.cut_hook != p.layer + 1u;
        raw[out + 15u] = select(1.0, 0.0, ran);
    }
}
