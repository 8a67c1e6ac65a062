//! Small, fast versions of the `reproduce` presets asserting the papers' claims. Every check is a
//! function of its setting, and each test also runs it against a wrong setting and asserts that
//! it fails, so a check that cannot fail would be caught. Seeds are fixed and printed; the
//! engine runs use the f64 CPU engine (the presets' `auto` may pick the f32 GPU engine).

use rankcollapse::config::{Attention, Config, Engine, Mask, Skip};
use rankcollapse::reproduce::{amsel, dong, naderi, wu, Options};
use std::process::Command;

const SEED: u64 = 11;

fn opts() -> Options {
    Options { quick: true, seed: SEED, threads: 0, engine: Engine::Cpu }
}

fn collapse_by_mask(masks: &[Mask]) -> Vec<f64> {
    masks
        .iter()
        .map(|&m| wu::total_collapse(&wu::log10_mu(&wu::mask_config(&opts(), 16, 16, 2, m)).unwrap()))
        .collect()
}

#[test]
fn masks_collapse_complete_fastest_windows_slowest() {
    let claimed = [Mask::Full, Mask::Causal, Mask::CausalWindow(4), Mask::Window(4)];
    let totals = collapse_by_mask(&claimed);
    eprintln!("seed {SEED}: collapse by mask {claimed:?}: {totals:?}");
    assert!(wu::strictly_decreasing(&totals), "seed {SEED}: {totals:?}");
    // Wrong setting: the same masks in the opposite order.
    let swapped: Vec<f64> = totals.iter().rev().copied().collect();
    assert!(!wu::strictly_decreasing(&swapped), "seed {SEED}: the ordering check cannot fail");
}

#[test]
fn collapse_rate_falls_as_the_window_shrinks() {
    let windows = [2usize, 4, 8];
    let rates: Vec<f64> = windows
        .iter()
        .map(|&w| wu::rate(&wu::log10_mu(&wu::mask_config(&opts(), 16, 16, 2, Mask::Window(w))).unwrap()))
        .collect();
    eprintln!("seed {SEED}: rates for window {windows:?}: {rates:?}");
    let shrinking: Vec<f64> = rates.iter().rev().copied().collect();
    assert!(wu::strictly_decreasing(&shrinking), "seed {SEED}: rates {rates:?}");
    assert!(!wu::strictly_decreasing(&rates), "seed {SEED}: growing windows must not pass");
}

fn log_ratios(cfg: &Config) -> Vec<f64> {
    dong::successive_log_ratios(&dong::deep_run(cfg).unwrap().log10_res)
}

#[test]
fn pure_attention_successive_log_ratio_tends_to_three() {
    let cfg = Config {
        tokens: 16,
        width: 16,
        depth: 6,
        sequences: 2,
        seed: SEED,
        spectrum_every: 0,
        ..Config::default()
    };
    let ratios = log_ratios(&cfg);
    eprintln!("seed {SEED}: pure attention ratios {ratios:?}");
    assert!(dong::ratio_near_three(&ratios, 0.15), "seed {SEED}: {ratios:?}");
    // Wrong setting: skip connections stop the collapse, the ratio is near 1.
    let skip = log_ratios(&Config { skip: Skip::Standard, ..cfg });
    eprintln!("seed {SEED}: with skip {skip:?}");
    assert!(!dong::ratio_near_three(&skip, 0.15), "seed {SEED}: skip passes: {skip:?}");
}

#[test]
fn dong_bound_is_above_the_measured_residual_from_layer_one() {
    let cfg = Config {
        tokens: 16,
        width: 16,
        depth: 4,
        sequences: 2,
        seed: SEED,
        spectrum_every: 0,
        ..Config::default()
    };
    let deep = dong::deep_run(&cfg).unwrap();
    let log10_c = (4.0 * deep.beta / 16f64.sqrt()).log10();
    for l in 1..=4 {
        let bound = dong::log10_bound(log10_c, deep.log10_abs[1], l - 1);
        assert!(deep.log10_abs[l] <= bound + 1e-9, "seed {SEED}: layer {l}: {} > {bound}", deep.log10_abs[l]);
    }
}

#[test]
fn markov_attention_bulk_is_two_over_sqrt_n() {
    let (s1, scaled) =
        naderi::attention_spectrum(&naderi::spectrum_config(&opts(), Attention::Markov, 256, 2)).unwrap();
    eprintln!("seed {SEED}: markov n = 256: sigma_1 {s1}, sigma_2 sqrt(n) {scaled}");
    assert!((s1 - 1.0).abs() < 0.02, "seed {SEED}: sigma_1 {s1}");
    assert!(naderi::levels_at(&[scaled], 2.0, 0.2), "seed {SEED}: sigma_2 sqrt(n) = {scaled}");
    // Wrong setting: uniform attention has no bulk at all (sigma_2 = 0).
    let (_, uniform) =
        naderi::attention_spectrum(&naderi::spectrum_config(&opts(), Attention::Uniform, 256, 2)).unwrap();
    assert!(!naderi::levels_at(&[uniform], 2.0, 0.2), "seed {SEED}: uniform attention passes: {uniform}");
}

#[test]
fn removing_the_outlier_raises_the_stable_rank() {
    let final_rank = |fix: bool, skip: Skip| {
        let cfg = Config {
            attention: Attention::Markov,
            remove_outlier: fix,
            skip,
            ..naderi::depth_config(&opts(), 48, 6, 2)
        };
        *rankcollapse::reproduce::layer_mean(&cfg, rankcollapse::metrics::Metric::GramStableRank)
            .unwrap()
            .last()
            .unwrap()
    };
    let without = [final_rank(false, Skip::None), final_rank(false, Skip::Standard)];
    let with = [final_rank(true, Skip::None), final_rank(true, Skip::Standard)];
    eprintln!("seed {SEED}: stable rank after 6 layers without fix {without:?}, with {with:?}");
    assert!(naderi::fix_raises(&without, &with), "seed {SEED}: {without:?} vs {with:?}");
    assert!(!naderi::fix_raises(&with, &without), "seed {SEED}: swapped lists pass");
}

#[test]
fn first_layer_stable_rank_grows_with_n_only_with_the_fix() {
    let ns = [16usize, 32, 64, 128];
    let plain: Vec<f64> =
        ns.iter().map(|&n| naderi::first_layer_stable_rank(&opts(), n, false, 2).unwrap()).collect();
    let fixed: Vec<f64> =
        ns.iter().map(|&n| naderi::first_layer_stable_rank(&opts(), n, true, 2).unwrap()).collect();
    eprintln!("seed {SEED}: n {ns:?}: A {plain:?}, A - 11^T/n {fixed:?}");
    assert!(naderi::grows(&fixed, 4.0), "seed {SEED}: with the fix {fixed:?}");
    assert!(!naderi::grows(&plain, 1.5), "seed {SEED}: without the fix {plain:?}");
}

#[test]
fn low_rank_head_error_falls_with_heads_while_one_full_rank_head_is_exact() {
    let data = amsel::Data::new(8, 60 * 8 * 8, 1000, SEED);
    let hs = [1usize, 2, 4, 8];
    let errs: Vec<f64> = hs.iter().map(|&h| amsel::readout_error(&data, 1, h, SEED).unwrap().0).collect();
    eprintln!("seed {SEED}: d = 8, rank-1 heads H {hs:?}: {errs:?}");
    assert!(amsel::falls(&errs, 0.02), "seed {SEED}: {errs:?}");
    assert!(
        errs.iter().all(|&e| e > 0.3),
        "seed {SEED}: low-rank heads are not supposed to be good: {errs:?}"
    );
    let reversed: Vec<f64> = errs.iter().rev().copied().collect();
    assert!(!amsel::falls(&reversed, 0.02), "seed {SEED}: rising errors pass");

    let betas = [1e2, 1e4, 1e6];
    let full: Vec<f64> = betas.iter().map(|&b| amsel::full_rank_error(&data.test, b)).collect();
    eprintln!("seed {SEED}: one full-rank head, beta {betas:?}: {full:?}");
    assert!(amsel::full_rank_converges(&full), "seed {SEED}: {full:?}");
    // Wrong setting: one rank-1 head at the same betas (no read-out) never becomes exact.
    let u = &amsel::projections(8, 1, 1, SEED)[0];
    let low: Vec<f64> = betas
        .iter()
        .map(|&b| {
            data.test
                .iter()
                .map(|s| (&amsel::head_output(u, b, s) - &s.target).mapv(|v| v * v).sum())
                .sum::<f64>()
                / data.test.len() as f64
        })
        .collect();
    assert!(!amsel::full_rank_converges(&low), "seed {SEED}: a rank-1 head passes: {low:?}");
}

/// Where token 2 of the two-token counterexample ends (degrees from token 1) after 60 layers.
fn token_two_end(a: f64, b: f64, start_deg: f64) -> f64 {
    let t = start_deg.to_radians();
    let x = ndarray::arr2(&[[1.0, 0.0], [t.cos(), t.sin()]]);
    let traj = wu::sphere_trajectory(&wu::two_token_value(a, b), x, 60).unwrap();
    let last = traj.last().unwrap();
    assert!((last[[0, 0]] - 1.0).abs() < 1e-12, "token 1 moved: {last:?}");
    last[[1, 1]].atan2(last[[1, 0]]).to_degrees()
}

#[test]
fn layernorm_two_token_counterexample_settles_apart() {
    let settles_apart = |a: f64, b: f64| {
        let fixed = wu::two_token_fixed_points(a, b);
        let end = token_two_end(a, b, 120.0);
        eprintln!("a {a}, b {b}: fixed points {fixed:?} rad, token 2 ends at {end} deg");
        end.abs() > 1.0 && fixed.iter().any(|t| (t.to_degrees() - end).abs() < 1e-6)
    };
    assert!(settles_apart(-2.0, 0.5));
    // Wrong setting: W_V = diag(1, 0.5) has no equilibrium off token 1: token 2 collapses onto it.
    assert!(!settles_apart(0.0, 0.5));
}

#[test]
fn layernorm_has_equilibria_of_every_rank_for_one_value_matrix() {
    let d = 4;
    let value = wu::shift_value(d);
    for k in 1..=d {
        let traj = wu::sphere_trajectory(&value, wu::rank_k_start(d, k, SEED), 100).unwrap();
        let rank = wu::numerical_rank(traj.last().unwrap(), 1e-8);
        assert_eq!(rank, k, "seed {SEED}: start of rank {k}");
    }
    // Wrong setting: the identity value matrix (orthogonal) collapses the same rank-d start.
    let traj = wu::sphere_trajectory(&ndarray::Array2::eye(d), wu::rank_k_start(d, d, SEED), 100).unwrap();
    assert!(wu::numerical_rank(traj.last().unwrap(), 1e-8) < d, "seed {SEED}: identity W_V keeps full rank");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rankcollapse"))
}

#[test]
fn cli_reproduce_writes_reports_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("repro");
    // A report left by an earlier run of another paper stays in the index.
    std::fs::create_dir_all(out.join("amsel2024")).unwrap();
    std::fs::write(out.join("amsel2024/report.md"), "## earlier\n\n![old figure](old.png)\n").unwrap();
    let res =
        bin().args(["reproduce", "wu2024", "--quick", "--seed", "3", "--out"]).arg(&out).output().unwrap();
    assert!(res.status.success(), "stderr: {}", String::from_utf8_lossy(&res.stderr));
    let report = std::fs::read_to_string(out.join("wu2024/report.md")).unwrap();
    assert!(report.contains("| quantity | the paper | measured here | agrees |"), "{report}");
    assert!(report.contains("--seed 3"), "{report}");
    for fig in ["mu_by_mask", "rate_vs_window", "two_token_equilibrium", "rank_k_equilibria"] {
        assert!(out.join(format!("wu2024/{fig}.png")).metadata().unwrap().len() > 1000, "{fig}.png");
        assert!(out.join(format!("wu2024/{fig}.svg")).exists(), "{fig}.svg");
        assert!(report.contains(&format!("({fig}.png)")), "{fig} not linked");
    }
    let index = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(index.contains("(wu2024/mu_by_mask.png)"), "{index}");
    assert!(index.contains("![old figure](amsel2024/old.png)"), "{index}");
    assert!(index.find("## Wu") < index.find("## earlier"), "papers out of order: {index}");
}

#[test]
fn cli_reproduce_rejects_bad_input_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let res = bin().args(["reproduce", "vaswani2017", "--out"]).arg(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("vaswani2017") && err.contains("dong2021") && !err.contains("panicked"), "{err}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let res =
        bin().args(["reproduce", "amsel2024", "--quick", "--out"]).arg(file.join("sub")).output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("--out") && err.contains("a-file") && !err.contains("panicked"), "{err}");
}
