// Shared by every kernel (prepended by the engine): the -inf sentinel for log scales, the
// counter-based generator, and cancellation-free expm1.

// WGSL has no infinity literal: a log scale at or below NEG_LIMIT means -inf (an exact zero).
const NEG: f32 = -1.0e30;
const NEG_LIMIT: f32 = -1.0e29;
const EPS32: f32 = 1.1920929e-7;

fn is_neg(x: f32) -> bool { return x <= NEG_LIMIT; }

// False when this invocation's loops no longer run: llvmpipe stops every loop of an invocation
// after 65535 loop-header passes in all, silently (each loop then ends after one pass). A kernel
// that may get there calls this last, with a trip count the compiler cannot know (a uniform
// parameter >= 2), and reports a cut instead of a wrong number.
fn loops_ran(trips: u32) -> bool {
    var count = 0u;
    for (var i = 0u; i < trips; i++) { count += 1u; }
    return count == trips;
}
// e^x with e^-inf = 0.
fn exp_or_zero(x: f32) -> f32 { if (is_neg(x)) { return 0.0; } return exp(max(x, -200.0)); }
fn ln_or_neg(x: f32) -> f32 { if (x > 0.0) { return log(x); } return NEG; }

// expm1 without cancellation. Kahan's ratio form needs log accurate relative to its result near
// 1, which WGSL does not promise (absolute error 2^-21 on [0.5, 2]), so small arguments use the
// Taylor series (degree 9: truncation below 3e-10 relative for |x| <= 1/2) and larger ones
// exp(x) - 1 (cancellation at most a factor 2.6 there).
fn expm1(x: f32) -> f32 {
    if (abs(x) > 0.5) { return exp(x) - 1.0; }
    var t = 1.0 + x / 9.0;
    t = 1.0 + x / 8.0 * t;
    t = 1.0 + x / 7.0 * t;
    t = 1.0 + x / 6.0 * t;
    t = 1.0 + x / 5.0 * t;
    t = 1.0 + x / 4.0 * t;
    t = 1.0 + x / 3.0 * t;
    t = 1.0 + x / 2.0 * t;
    return x * t;
}

// Kahan's compensated sum: *acc += v, the rounding error kept in *comp.
fn kahan_add(acc: ptr<function, f32>, comp: ptr<function, f32>, v: f32) {
    let y = v - *comp;
    let t = *acc + y;
    *comp = (t - *acc) - y;
    *acc = t;
}

fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xffffu; let a_hi = a >> 16u;
    let b_lo = b & 0xffffu; let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    let cross = (lo_lo >> 16u) + (hi_lo & 0xffffu) + (lo_hi & 0xffffu);
    let hi = hi_hi + (hi_lo >> 16u) + (lo_hi >> 16u) + (cross >> 16u);
    return vec2<u32>(hi, a * b);
}

// Philox4x32-10 (Random123), 32x32 -> 64-bit products from 16-bit halves (WGSL has no u64).
fn philox(counter: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key_in;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) { k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u); }
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

fn unit_open(w: u32) -> f32 { return (f32(w) + 0.5) * 2.3283064365386963e-10; }

// Normal number `k` (< 2^32) of block (key, stream, sequence): Box-Muller on words of
// Philox([k / 4, 0, sequence, stream]), the layout of rng::GaussianBlock.
fn normal_at(key: vec2<u32>, stream: u32, sequence: u32, k: u32) -> f32 {
    let w = philox(vec4<u32>(k / 4u, 0u, sequence, stream), key);
    let pair = (k % 4u) / 2u;
    var u0 = unit_open(w.x); var u1 = unit_open(w.y);
    if (pair == 1u) { u0 = unit_open(w.z); u1 = unit_open(w.w); }
    let r = sqrt(-2.0 * log(u0));
    let theta = 6.283185307179586 * u1;
    if (k % 2u == 0u) { return r * cos(theta); }
    return r * sin(theta);
}

// Workgroup reductions of the one-workgroup-per-sequence kernels (workgroup size WG); every
// invocation must call them (they contain barriers).
const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

// The tree is written out (not a loop): the same sums in the same order, and no loop passes
// towards llvmpipe's per-invocation limit (the Lanczos kernels call these thousands of times).
fn sum_step(tid: u32, s: u32) {
    if (tid < s) { red[tid] = red[tid] + red[tid + s]; }
    workgroupBarrier();
}

fn max_step(tid: u32, s: u32) {
    if (tid < s) { red[tid] = max(red[tid], red[tid + s]); }
    workgroupBarrier();
}

fn reduce_sum(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    sum_step(tid, 128u); sum_step(tid, 64u); sum_step(tid, 32u); sum_step(tid, 16u);
    sum_step(tid, 8u); sum_step(tid, 4u); sum_step(tid, 2u); sum_step(tid, 1u);
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    max_step(tid, 128u); max_step(tid, 64u); max_step(tid, 32u); max_step(tid, 16u);
    max_step(tid, 8u); max_step(tid, 4u); max_step(tid, 2u); max_step(tid, 1u);
    let r = red[0];
    workgroupBarrier();
    return r;
}
