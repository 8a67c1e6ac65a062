// Numerical faults: flags each sequence whose state holds a value the tracked representation
// does not allow (a NaN or an infinity in R or m; g or l NaN or +inf), with the code of the
// first layer part that produced one. For attention, also a residual scale that fell below the
// f32 log's range (l at the -inf sentinel from a state that had a residual): softmax weights are
// positive, so the residual of distinct tokens is never exactly zero. The CPU twin is
// state::Tracked::fault with model::apply_layer_checked.

// The log scales of sequence b are scal[stride b + k] for k < count: (g, l) of a state, or
// (g, lm, lr_0, ...) of a result in the "pre" form compose takes (checked before compose, which
// would fold a NaN into an exact zero).
struct Params {
    n: u32, w: u32, code: u32, underflow_code: u32,
    stride: u32, count: u32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scal: array<f32>;
@group(0) @binding(3) var<storage, read> before: array<f32>;
@group(0) @binding(4) var<storage, read_write> faults: array<u32>;

fn not_finite(v: f32) -> bool { return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u; }
// NaN or +inf (-inf is an exact zero, though the kernels write the NEG sentinel for it).
fn bad_log(v: f32) -> bool {
    let u = bitcast<u32>(v);
    return (u & 0x7fffffffu) > 0x7f800000u || u == 0x7f800000u;
}

@compute @workgroup_size(256)
fn check(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wg.x;
    let tid = lid.x;
    let per = (p.n + 1u) * p.w;
    var bad = 0.0;
    for (var e = tid; e < per; e += WG) {
        if (not_finite(x[b * per + e])) { bad = 1.0; }
    }
    let any = reduce_max(tid, bad);
    if (tid == 0u && faults[b] == 0u) {
        var logs_bad = false;
        for (var k = 0u; k < p.count; k++) { logs_bad = logs_bad || bad_log(scal[p.stride * b + k]); }
        let g = scal[p.stride * b];
        let l = scal[p.stride * b + 1u];
        if (any > 0.0 || logs_bad) {
            faults[b] = p.code;
        } else if (p.underflow_code != 0u && !is_neg(before[4u * b]) && !is_neg(before[4u * b + 1u])
                   && !is_neg(g) && is_neg(l)) {
            faults[b] = p.underflow_code;
        }
    }
}
