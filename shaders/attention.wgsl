// Streaming masked attention on the tracked state (docs/DESIGN.md, "Numerics"; CPU twin:
// model::attention). Per query row i the keys of its mask range are visited once, never
// storing an n x n matrix. With x_ij = fb b_ij (fb = e^{2g+2l}, b_ij = tau <q_i, k_j>) and p the
// softmax of the mean-token scores fa a_j over the row's keys, the "split" regime accumulates
//   P_i = sum_j p_j v_j,  F_i = sum_j p_j e_ij v_j,  S_i = sum_j p_j e_ij,  e_ij = expm1(x_ij)/fb
// (e_ij = b_ij once fb |b| is below f32 epsilon), and the output is P_i + fb E_i with
// E_i = (F_i - S_i P_i) / (1 + fb S_i), computed without cancellation. Under the full mask P_i is
// one row for every query: it goes to the mean and the residual is E alone, at log scale l + lb,
// however far below the float range that is. When fb max|b| > 1 (saturating softmax) the
// "argmax" regime accumulates relative to the row's running argmax instead.

struct Params {
    n: u32, r: u32, dv: u32, batch: u32,
    mask: u32, window: u32, kind: u32, remove: u32,
    head: u32, heads: u32, ps: u32, tau: f32,
    key0: u32, key1: u32, stream: u32, seq_base: u32,
    shared_seq: u32, rowconst: u32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qb: array<f32>;
@group(0) @binding(2) var<storage, read> kb: array<f32>;
@group(0) @binding(3) var<storage, read> scal: array<f32>;
@group(0) @binding(4) var<storage, read_write> abuf: array<f32>;
@group(0) @binding(5) var<storage, read_write> hs: array<f32>;


// Per sequence: a_j = tau <q_mean, k_j>, the score bound and the regime of this head:
// hs[8 b..] = (fa, fb, lb, argmax regime, linear, la).
@compute @workgroup_size(256)
fn prep(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.x;
    let tid = lid.x;
    let n = p.n;
    let r = p.r;
    let base = b * (n + 1u) * r;
    var qmax = 0.0;
    var kmax = 0.0;
    for (var i = tid; i < n; i += WG) {
        var q2 = 0.0; var k2 = 0.0; var a = 0.0;
        for (var t = 0u; t < r; t++) {
            let qv = qb[base + i * r + t];
            let kv = kb[base + i * r + t];
            q2 += qv * qv; k2 += kv * kv;
            a += qb[base + n * r + t] * kv;
        }
        abuf[b * n + i] = p.tau * a;
        qmax = max(qmax, q2); kmax = max(kmax, k2);
    }
    let q_big = sqrt(reduce_max(tid, qmax));
    let k_big = sqrt(reduce_max(tid, kmax));
    if (tid == 0u) {
        let g = scal[b * 4u];
        let l = scal[b * 4u + 1u];
        var la = NEG; var lb = NEG;
        if (!is_neg(g) && !is_neg(l)) { la = 2.0 * g + l; lb = 2.0 * g + 2.0 * l; }
        let bound = p.tau * q_big * k_big;
        var log_bound = NEG;
        if (bound > 0.0 && !is_neg(lb)) { log_bound = lb + log(bound); }
        var argmax = 0.0;
        if (log_bound > 0.0) { argmax = 1.0; }
        var linear = 0.0;
        if (log_bound < log(EPS32)) { linear = 1.0; }
        hs[b * 8u] = exp_or_zero(min(la, 80.0));
        hs[b * 8u + 1u] = exp_or_zero(min(lb, 80.0));
        hs[b * 8u + 2u] = lb;
        hs[b * 8u + 3u] = argmax;
        hs[b * 8u + 4u] = linear;
        hs[b * 8u + 5u] = la;
    }
}

@group(0) @binding(6) var<storage, read> vb: array<f32>;
@group(0) @binding(7) var<storage, read_write> yb: array<f32>;
@group(0) @binding(8) var<storage, read_write> pre: array<f32>;
@group(0) @binding(9) var<storage, read_write> ent: array<f32>;

const DC: u32 = 16u;

fn key_range(i: u32) -> vec2<u32> {
    let n = p.n;
    if (p.mask == 1u) { return vec2<u32>(0u, i + 1u); }
    if (p.mask == 2u) { return vec2<u32>(select(0u, i + 1u - p.window, i + 1u > p.window), min(i + p.window, n)); }
    if (p.mask == 3u) { return vec2<u32>(select(0u, i + 1u - p.window, i + 1u > p.window), i + 1u); }
    return vec2<u32>(0u, n);
}

// The p-logit of key j for row i (mean-token score, Markov logit, or 0).
fn base_logit(b: u32, i: u32, j: u32, fa: f32) -> f32 {
    if (p.kind == 0u) { return fa * abuf[b * p.n + j]; }
    if (p.kind == 1u) {
        var seq = p.seq_base + b;
        if (p.shared_seq != 0u) { seq = p.seq_base; }
        let z = normal_at(vec2<u32>(p.key0, p.key1), p.stream, seq, i * p.n + j);
        return -0.34657359027997264 + 0.8325546111576977 * z;
    }
    return 0.0;
}

// tau <q_i, k_j>.
fn b_score(qbase: u32, i: u32, j: u32) -> f32 {
    var acc = 0.0;
    for (var t = 0u; t < p.r; t++) { acc += qb[qbase + i * p.r + t] * kb[qbase + j * p.r + t]; }
    return p.tau * acc;
}

// tau <q_i, k_j - k_k>: b_ij - b_ik from the key difference (no cancellation of large scores).
fn b_diff(qbase: u32, i: u32, j: u32, k: u32) -> f32 {
    var acc = 0.0;
    for (var t = 0u; t < p.r; t++) {
        acc += qb[qbase + i * p.r + t] * (kb[qbase + j * p.r + t] - kb[qbase + k * p.r + t]);
    }
    return p.tau * acc;
}

// z_ij - z_ik of the softmax scores, formed from differences.
fn score_diff(b: u32, i: u32, j: u32, k: u32, fa: f32, fb: f32) -> f32 {
    return fa * (abuf[b * p.n + j] - abuf[b * p.n + k]) + fb * b_diff(b * (p.n + 1u) * p.r, i, j, k);
}

// Where abuf keeps, after the scores a_j of every sequence, (k_i, mu_i) of every row.
fn row_slot(b: u32, i: u32) -> u32 { return p.batch * p.n + (b * p.n + i) * 2u; }

// Argmax regime, first pass: per row i, the key k_i of its largest score and mu_i, the largest
// score of the other keys relative to it (the log of the row's largest off-argmax weight).
@compute @workgroup_size(64)
fn argmax_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let b = gid.z;
    if (i >= p.n || !(p.kind == 0u && hs[b * 8u + 3u] > 0.5)) { return; }
    let fa = hs[b * 8u];
    let fb = hs[b * 8u + 1u];
    let qbase = b * (p.n + 1u) * p.r;
    let range = key_range(i);
    var big = NEG;
    var k = range.x;
    for (var j = range.x; j < range.y; j++) {
        let z = fa * abuf[b * p.n + j] + fb * b_score(qbase, i, j);
        if (z > big) { big = z; k = j; }
    }
    var mu = NEG;
    for (var j = range.x; j < range.y; j++) {
        if (j != k) { mu = max(mu, score_diff(b, i, j, k, fa, fb)); }
    }
    abuf[row_slot(b, i)] = f32(k);
    abuf[row_slot(b, i) + 1u] = mu;
}

// Argmax regime, second pass (one workgroup per sequence): when every row picks the same key k,
// hs[8 b + 6] = k and hs[8 b + 7] = max_i mu_i (the reference e_k of DESIGN.md: A = 1 e_k^T + D),
// otherwise hs[8 b + 6] = -1.
@compute @workgroup_size(256)
fn onehot(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.x;
    let tid = lid.x;
    let live = p.kind == 0u && hs[b * 8u + 3u] > 0.5;
    var kmin = 3.0e38;
    var kmax = -1.0;
    var mu = NEG;
    if (live) {
        for (var i = tid; i < p.n; i += WG) {
            let k = abuf[row_slot(b, i)];
            kmin = min(kmin, k);
            kmax = max(kmax, k);
            mu = max(mu, abuf[row_slot(b, i) + 1u]);
        }
    }
    let lo = -reduce_max(tid, -kmin);
    let hi = reduce_max(tid, kmax);
    let top = reduce_max(tid, mu);
    if (tid == 0u) {
        if (live && lo == hi) {
            hs[b * 8u + 6u] = lo;
            hs[b * 8u + 7u] = top;
        } else {
            hs[b * 8u + 6u] = -1.0;
        }
    }
}

// One query row i, value columns [c0, c0 + DC), of head `head` of sequence b.
@compute @workgroup_size(64)
fn attend(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let c0 = gid.y * DC;
    let b = gid.z;
    let n = p.n;
    if (i >= n) { return; }
    let dv = p.dv;
    let r = p.r;
    let ncols = min(DC, dv - c0);
    let vbase = b * (n + 1u) * dv;
    let qbase = b * (n + 1u) * r;
    let yw = p.heads * dv;
    let ybase = b * (n + 1u) * yw + p.head * dv + c0;
    let g = scal[b * 4u];
    let l = scal[b * 4u + 1u];
    let fa = hs[b * 8u];
    let fb = hs[b * 8u + 1u];
    let lb = hs[b * 8u + 2u];
    let argmax = p.kind == 0u && hs[b * 8u + 3u] > 0.5;
    let linear = hs[b * 8u + 4u] > 0.5;
    let has_b = p.kind == 0u && !is_neg(l);
    let range = key_range(i);
    var out: array<f32, 16>;
    var entropy = 0.0;
    var lr = l;
    var lm = 0.0;
    var pconst: array<f32, 16>;
    var rowconst = false;

    if (p.kind == 3u) {
        for (var c = 0u; c < ncols; c++) { out[c] = vb[vbase + i * dv + c0 + c]; }
    } else if (argmax && hs[b * 8u + 6u] >= 0.0) {
        // Every row picks key k: A_i = e_k + D_i, and the e_k part is one row for every query
        // (it goes to the mean). The rest, sum_{j != k} w_j (v_j - v_k) / sum_j w_j with
        // w_j = e^{z_ij - z_ik}, is the residual at the log scale l + mu (mu = hs[8 b + 7], the
        // largest off-argmax log weight of any row), however far below the float range.
        let k = u32(hs[b * 8u + 6u]);
        let mu = hs[b * 8u + 7u];
        var z_sum = 1.0;
        var t_sum = 0.0;
        var acc: array<f32, 16>;
        for (var j = range.x; j < range.y; j++) {
            if (j == k) { continue; }
            let dz = score_diff(b, i, j, k, fa, fb);
            let w = exp(dz);
            z_sum += w;
            t_sum += w * dz;
            let ws = exp_or_zero(dz - mu);
            for (var c = 0u; c < ncols; c++) {
                acc[c] += ws * (vb[vbase + j * dv + c0 + c] - vb[vbase + k * dv + c0 + c]);
            }
        }
        for (var c = 0u; c < ncols; c++) {
            out[c] = acc[c] / z_sum;
            pconst[c] = vb[vbase + k * dv + c0 + c];
        }
        entropy = log(z_sum) - t_sum / z_sum;
        rowconst = true;
        lr = NEG;
        if (!is_neg(mu)) { lr = l + mu; }
    } else if (argmax) {
        // Rows pick different keys. Online softmax relative to the running argmax k:
        // acc = sum_j w_j (v_j - v_k), the output stored as it is, at the scale l.
        var big = NEG;
        var k = range.x;
        var z_sum = 0.0;
        var t_sum = 0.0;
        var acc: array<f32, 16>;
        for (var j = range.x; j < range.y; j++) {
            let z = fa * abuf[b * n + j] + fb * b_score(qbase, i, j);
            if (z > big) {
                let sc = exp_or_zero(big - z);
                for (var c = 0u; c < ncols; c++) {
                    acc[c] = sc * (acc[c] + z_sum * (vb[vbase + k * dv + c0 + c] - vb[vbase + j * dv + c0 + c]));
                }
                t_sum = sc * (t_sum + z_sum * (big - z));
                if (is_neg(big)) { t_sum = 0.0; }
                z_sum = sc * z_sum + 1.0;
                big = z;
                k = j;
            } else {
                let wj = exp(z - big);
                for (var c = 0u; c < ncols; c++) {
                    acc[c] += wj * (vb[vbase + j * dv + c0 + c] - vb[vbase + k * dv + c0 + c]);
                }
                z_sum += wj;
                t_sum += wj * (z - big);
            }
        }
        for (var c = 0u; c < ncols; c++) { out[c] = vb[vbase + k * dv + c0 + c] + acc[c] / z_sum; }
        entropy = log(z_sum) - t_sum / z_sum;
    } else {
        // Split regime (also the fixed matrices: Markov, uniform). Sums are taken relative to
        // the key kr of the row's largest p: with de_j = e_j - e_kr and dv_j = v_j - v_kr,
        // F - S P = sum_j p_j de_j dv_j - (sum_j p_j de_j)(sum_j p_j dv_j), so a peaked p
        // (every term near key kr) costs no cancellation.
        var big = NEG;
        var kr = range.x;
        for (var j = range.x; j < range.y; j++) {
            let z = base_logit(b, i, j, fa);
            if (z > big) { big = z; kr = j; }
        }
        var z_norm = 0.0;
        for (var j = range.x; j < range.y; j++) { z_norm += exp(base_logit(b, i, j, fa) - big); }
        var pacc: array<f32, 16>;
        var facc: array<f32, 16>;
        var s_acc = 0.0;
        var zt_sum = 0.0;
        var t_sum = 0.0;
        var b_k = 0.0;
        var e_k = 0.0;
        var grow_k = 1.0;
        if (has_b) {
            b_k = b_score(qbase, i, kr);
            if (linear) { e_k = b_k; } else { e_k = expm1(fb * b_k) / fb; grow_k = exp(fb * b_k); }
        }
        for (var j = range.x; j < range.y; j++) {
            let zp = base_logit(b, i, j, fa);
            let pj = exp(zp - big) / z_norm;
            var de = 0.0;
            var zt = zp;
            if (has_b && j != kr) {
                let db = b_diff(qbase, i, j, kr);
                if (linear) { de = db; } else { de = grow_k * expm1(fb * db) / fb; }
                zt = zp + fb * (b_k + db);
            } else if (has_b) {
                zt = zp + fb * b_k;
            }
            let wt = exp(zt - big);
            zt_sum += wt;
            t_sum += wt * (zt - big);
            s_acc += pj * de;
            if (j != kr) {
                for (var c = 0u; c < ncols; c++) {
                    let dvj = vb[vbase + j * dv + c0 + c] - vb[vbase + kr * dv + c0 + c];
                    pacc[c] += pj * dvj;
                    facc[c] += pj * de * dvj;
                }
            }
        }
        for (var c = 0u; c < ncols; c++) {
            facc[c] -= s_acc * pacc[c];
            pacc[c] += vb[vbase + kr * dv + c0 + c];
        }
        s_acc += e_k;
        entropy = log(zt_sum) - t_sum / zt_sum;
        var u = fb;
        if (linear) { u = 0.0; }
        rowconst = p.rowconst == 1u;
        for (var c = 0u; c < ncols; c++) {
            let e_row = facc[c] / (1.0 + u * s_acc);
            if (rowconst) {
                out[c] = e_row;
                pconst[c] = pacc[c];
            } else {
                out[c] = pacc[c] + exp_or_zero(lb) * e_row;
            }
        }
        if (rowconst) {
            if (has_b) { lr = l + lb; } else { lr = NEG; }
        }
    }
    for (var c = 0u; c < ncols; c++) { yb[ybase + i * yw + c] = out[c]; }
    if (c0 == 0u) {
        let h = entropy / f32(p.heads);
        if (p.head == 0u) { ent[b * n + i] = h; } else { ent[b * n + i] += h; }
    }
    if (i == 0u) {
        // The mean row of this head's block: the value mean (unless the outlier is removed)
        // plus, under the full mask, the constant part P of every row.
        if (p.remove == 1u && rowconst) { lm = l; }
        for (var c = 0u; c < ncols; c++) {
            var mv = 0.0;
            if (p.remove == 0u) { mv = vb[vbase + n * dv + c0 + c]; }
            if (rowconst) {
                if (p.remove == 1u) { mv = pconst[c]; } else { mv += exp_or_zero(l) * pconst[c]; }
            }
            yb[ybase + n * yw + c] = mv;
        }
        if (c0 == 0u) {
            pre[b * p.ps] = g;
            if (p.head == 0u || lm != 0.0) { pre[b * p.ps + 1u] = lm; }
            pre[b * p.ps + 2u + p.head] = lr;
        }
    }
}

@group(0) @binding(10) var<storage, read_write> amat: array<f32>;

// The dense attention matrix of this head, amat[b n^2 + i n + j], for the layers whose spectrum
// is requested (plain f32 softmax: its entries, not the collapse, are what the spectrum needs).
@compute @workgroup_size(64)
fn dense(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let b = gid.z;
    let n = p.n;
    if (i >= n) { return; }
    let fa = hs[b * 8u];
    let fb = hs[b * 8u + 1u];
    let has_b = p.kind == 0u && !is_neg(scal[b * 4u + 1u]);
    let qbase = b * (n + 1u) * p.r;
    let range = key_range(i);
    let row = b * n * n + i * n;
    for (var j = 0u; j < n; j++) { amat[row + j] = 0.0; }
    if (p.kind == 3u) {
        amat[row + i] = 1.0;
        return;
    }
    var big = NEG;
    for (var j = range.x; j < range.y; j++) {
        var z = base_logit(b, i, j, fa);
        if (has_b) { z += fb * b_score(qbase, i, j); }
        amat[row + j] = z;
        big = max(big, z);
    }
    var total = 0.0;
    for (var j = range.x; j < range.y; j++) {
        let w = exp(amat[row + j] - big);
        amat[row + j] = w;
        total += w;
    }
    for (var j = range.x; j < range.y; j++) { amat[row + j] = amat[row + j] / total; }
}
