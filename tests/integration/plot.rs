//! `rankcollapse::plot`: SVG and PNG of a metric against layer, from a run's layers.csv and from a
//! merged sweep CSV; gaps for non-finite values; errors that name the file and the bad value.

use rankcollapse::plot::{plot_file, PlotSpec};
use std::path::{Path, PathBuf};

const RUN_HEADER: &str = "layer,metric,mean,std,median,p05,p95,count,nonfinite";
const SWEEP_HEADER: &str = "point_id,repeat,heads,mask,layer,metric,mean,std,median,p05,p95,count,nonfinite";

fn spec(metric: &str, by: Option<&str>) -> PlotSpec {
    PlotSpec { metric: metric.to_string(), by: by.map(str::to_string), title: None }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A run of 6 layers: log10_res_fro and res_fro all drawable, stable_rank with a NaN at layer 2,
/// and res_fro of a second run with 0 (no log), inf and NaN.
fn run_csv() -> String {
    let mut s = format!("{RUN_HEADER}\n");
    for l in 0..6 {
        let lg = -0.1 - 2.0 * f64::from(l).powi(2);
        s += &format!("{l},log10_res_fro,{lg},0.1,{lg},{},{},16,0\n", lg - 0.5, lg + 0.5);
        let r = 10f64.powf(lg);
        s += &format!("{l},res_fro,{r:e},0,{r:e},{:e},{:e},16,0\n", r / 3.0, r * 3.0);
        let sr = if l == 2 { "NaN".to_string() } else { format!("{}", 4.0 - 0.5 * f64::from(l)) };
        s += &format!("{l},stable_rank,{sr},0.1,{sr},{sr},{sr},16,0\n");
    }
    s
}

/// A sweep: heads is constant, mask takes `full` and `window:2` (one point each, 2 repeats);
/// the `mean` of (point, repeat, layer) is `base(mask, layer)`, plus `full_offsets[repeat]` for
/// `full` only (a shift of every line alike would leave the auto-scaled picture unchanged).
fn sweep_csv(full_offsets: &[f64]) -> String {
    let mut s = format!("{SWEEP_HEADER}\n");
    for (point, mask) in ["full", "window:2"].iter().enumerate() {
        for (repeat, off) in full_offsets.iter().enumerate() {
            let off = if *mask == "full" { *off } else { 0.0 };
            for l in 0..5 {
                let rate = if *mask == "full" { 1.0 } else { 0.3 };
                let v = -0.2 - rate * f64::from(l * l) + off;
                s += &format!("{point},{repeat},8,{mask},{l},log10_res_fro,{v},0,{v},{v},{v},16,0\n");
                s += &format!(
                    "{point},{repeat},8,{mask},{l},mean_abs_cos,{},0,0,0,0,16,0\n",
                    0.1 * f64::from(l)
                );
            }
        }
    }
    s
}

/// The data lines of an SVG: polylines of stroke width 2 (axes and ticks are width 1, legend
/// samples width 3).
fn data_polylines(svg: &str) -> Vec<&str> {
    svg.split('<').filter(|e| e.starts_with("polyline") && e.contains("stroke-width=\"2\"")).collect()
}

fn points_of(polyline: &str) -> &str {
    polyline.split("points=\"").nth(1).and_then(|p| p.split('"').next()).unwrap()
}

/// Checks both files: the SVG's size and each label, the PNG's signature and IHDR size; returns
/// the SVG text.
fn check_outputs(svg_path: &Path, png_path: &Path, labels: &[&str]) -> String {
    let svg = std::fs::read_to_string(svg_path).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "not an SVG: {}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("width=\"1024\"") && svg.contains("height=\"640\""), "SVG size");
    assert!(svg.trim_end().ends_with("</svg>"), "SVG not closed");
    for label in labels {
        assert!(
            svg.contains(&format!(">\n{label}\n<")) || svg.contains(&format!(">{label}<")),
            "no text {label:?}"
        );
    }
    let png = std::fs::read(png_path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 1024, "PNG width");
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 640, "PNG height");
    // A white 1024 x 640 image compresses to a few kB; lines, band and glyphs make it larger.
    assert!(png.len() > 15_000, "PNG looks blank: {} bytes", png.len());
    svg
}

#[test]
fn run_plot_writes_svg_and_png_with_line_band_labels_and_legend() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "layers.csv", &run_csv());
    let (svg_path, png_path) =
        plot_file(&input, &spec("log10_res_fro", None), &dir.path().join("out/run")).unwrap();
    assert_eq!(svg_path, dir.path().join("out/run.svg"));
    assert_eq!(png_path, dir.path().join("out/run.png"));
    let svg = check_outputs(
        &svg_path,
        &png_path,
        &[
            "layer",
            "log10_res_fro",
            "log10_res_fro per layer",
            "mean over sequences",
            "p05-p95 over sequences",
        ],
    );
    let lines = data_polylines(&svg);
    assert_eq!(lines.len(), 1, "one unbroken line expected:\n{svg}");
    assert_eq!(points_of(lines[0]).split_whitespace().count(), 6, "6 layers");
    assert!(svg.contains("<polygon"), "no p05-p95 band");
}

#[test]
fn title_and_dots_in_the_out_stem_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "layers.csv", &run_csv());
    let spec = PlotSpec { metric: "stable_rank".into(), by: None, title: Some("Depth 6 & friends".into()) };
    let (svg_path, png_path) = plot_file(&input, &spec, &dir.path().join("plot.v1")).unwrap();
    assert_eq!(svg_path, dir.path().join("plot.v1.svg"));
    assert_eq!(png_path, dir.path().join("plot.v1.png"));
    check_outputs(&svg_path, &png_path, &["Depth 6 &amp; friends"]);
}

#[test]
fn non_finite_values_leave_gaps_and_log_axis_skips_non_positive() {
    let dir = tempfile::tempdir().unwrap();
    // stable_rank: NaN at layer 2 splits 0..=1 and 3..=5.
    let input = write(dir.path(), "layers.csv", &run_csv());
    let (svg_path, png_path) = plot_file(&input, &spec("stable_rank", None), &dir.path().join("sr")).unwrap();
    let svg = check_outputs(&svg_path, &png_path, &["mean over sequences"]);
    let counts: Vec<usize> =
        data_polylines(&svg).iter().map(|p| points_of(p).split_whitespace().count()).collect();
    assert_eq!(counts, [2, 3], "segments around the NaN:\n{svg}");

    // res_fro on a log axis: 0 at layer 1, inf at layer 3, NaN at layer 4, -inf at 5; layers 0 and
    // 2 remain, isolated, drawn as markers and no line; p05/p95 non-finite too.
    let text = format!(
        "{RUN_HEADER}\n0,res_fro,0.5,0,0.5,0.4,0.6,16,0\n1,res_fro,0,0,0,0,0,16,0\n2,res_fro,1e-40,0,1e-40,1e-41,1e-39,16,0\n\
         3,res_fro,inf,NaN,inf,inf,inf,16,1\n4,res_fro,NaN,NaN,NaN,NaN,NaN,0,16\n5,res_fro,-inf,NaN,-inf,-inf,-inf,16,2\n"
    );
    let input = write(dir.path(), "gappy.csv", &text);
    let (svg_path, png_path) = plot_file(&input, &spec("res_fro", None), &dir.path().join("res")).unwrap();
    let svg = check_outputs(&svg_path, &png_path, &["res_fro", "1e-40"]);
    assert!(data_polylines(&svg).is_empty(), "no two neighbouring values are drawable:\n{svg}");
    assert!(svg.matches("<circle").count() >= 2, "the two isolated values need markers");
}

#[test]
fn extreme_values_and_a_single_layer_plot_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{RUN_HEADER}\n0,stable_rank,1.7e308,0,0,-1.7e308,1.7e308,1,0\n1,stable_rank,-1.7e308,0,0,-1.7e308,1.7e308,1,0\n\
         0,res_fro,4.9e-324,0,0,4.9e-324,1.7e308,1,0\n1,res_fro,1.7e308,0,0,1.7e308,1.7e308,1,0\n\
         7,mu,3,0,3,3,3,1,0\n"
    );
    let input = write(dir.path(), "layers.csv", &text);
    for metric in ["stable_rank", "res_fro", "mu"] {
        let (svg_path, png_path) = plot_file(&input, &spec(metric, None), &dir.path().join(metric)).unwrap();
        check_outputs(&svg_path, &png_path, &[metric, "mean over sequences"]);
    }
}

#[test]
fn a_metric_with_nothing_drawable_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{RUN_HEADER}\n0,mu,0,0,0,0,0,4,0\n1,mu,NaN,NaN,NaN,NaN,NaN,0,4\n");
    let input = write(dir.path(), "layers.csv", &text);
    let err = plot_file(&input, &spec("mu", None), &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("layers.csv") && err.contains("\"mu\"") && err.contains("log axis"), "{err}");
    assert!(!dir.path().join("x.svg").exists());
}

#[test]
fn sweep_draws_one_line_per_value_of_by_defaulting_to_the_first_varying_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "merged.csv", &sweep_csv(&[0.0, -0.2]));
    for by in [None, Some("mask")] {
        let (svg_path, png_path) =
            plot_file(&input, &spec("log10_res_fro", by), &dir.path().join("sweep")).unwrap();
        let svg = check_outputs(
            &svg_path,
            &png_path,
            &["mask=full", "mask=window:2", "layer", "log10_res_fro", "log10_res_fro per layer by mask"],
        );
        assert_eq!(data_polylines(&svg).len(), 2, "one line per mask value (by {by:?}):\n{svg}");
        assert!(svg.contains("over the 2 point/repeat runs with that mask"), "caption: {svg}");
    }
    // `heads` has one value: one line.
    let (svg_path, png_path) =
        plot_file(&input, &spec("log10_res_fro", Some("heads")), &dir.path().join("heads")).unwrap();
    let svg = check_outputs(&svg_path, &png_path, &["heads=8"]);
    assert_eq!(data_polylines(&svg).len(), 1);
    assert!(svg.contains("over the 4 point/repeat runs with that heads"), "caption: {svg}");
}

#[test]
fn sweep_lines_average_mean_over_repeats() {
    // `full` repeats offset by +0.1 and -0.1 average to the single repeat with offset 0: the same
    // picture; offsets +0.1 and +0.3 move the `full` line against the `window:2` one.
    let dir = tempfile::tempdir().unwrap();
    let two = write(dir.path(), "two.csv", &sweep_csv(&[0.1, -0.1]));
    let one = write(dir.path(), "one.csv", &sweep_csv(&[0.0]));
    let skewed = write(dir.path(), "skewed.csv", &sweep_csv(&[0.1, 0.3]));
    let points = |input: &Path, stem: &str| {
        let (svg_path, _) = plot_file(input, &spec("log10_res_fro", None), &dir.path().join(stem)).unwrap();
        let svg = std::fs::read_to_string(svg_path).unwrap();
        data_polylines(&svg).iter().map(|p| points_of(p).to_string()).collect::<Vec<_>>()
    };
    let (two, one, skewed) = (points(&two, "two"), points(&one, "one"), points(&skewed, "skewed"));
    assert_eq!(two.len(), 2);
    assert_eq!(two, one, "mean over repeats");
    assert_ne!(skewed, one, "a different mean must move the lines");
}

#[test]
fn sweep_with_a_non_finite_value_leaves_a_gap_in_that_line_only() {
    let dir = tempfile::tempdir().unwrap();
    // The mean of finite values and -inf is -inf (as in the run statistics): a gap at that layer.
    let text = sweep_csv(&[0.0, -0.2]).replace(
        "0,1,8,full,2,log10_res_fro,-4.4,0,-4.4,-4.4,-4.4,16,0",
        "0,1,8,full,2,log10_res_fro,-inf,0,-inf,-inf,-inf,16,0",
    );
    assert!(text.contains("-inf"), "fixture row not found");
    let input = write(dir.path(), "merged.csv", &text);
    let (svg_path, png_path) =
        plot_file(&input, &spec("log10_res_fro", None), &dir.path().join("g")).unwrap();
    let svg = check_outputs(&svg_path, &png_path, &["mask=full", "mask=window:2"]);
    let mut counts: Vec<usize> =
        data_polylines(&svg).iter().map(|p| points_of(p).split_whitespace().count()).collect();
    counts.sort();
    assert_eq!(counts, [2, 2, 5], "full split around layer 2, window:2 whole:\n{svg}");
}

#[test]
fn unknown_metric_is_an_error_naming_it_the_file_and_the_metrics_present() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "layers.csv", &run_csv());
    let err = plot_file(&input, &spec("res_frob", None), &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("res_frob") && err.contains("layers.csv"), "{err}");
    assert!(err.contains("log10_res_fro, res_fro, stable_rank"), "metrics present: {err}");
    let input = write(dir.path(), "merged.csv", &sweep_csv(&[0.0]));
    let err = plot_file(&input, &spec("stable_rank", None), &dir.path().join("x")).unwrap_err().to_string();
    assert!(
        err.contains("stable_rank") && err.contains("merged.csv") && err.contains("mean_abs_cos"),
        "{err}"
    );
}

#[test]
fn unknown_or_inapplicable_by_is_an_error_naming_it_and_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let merged = write(dir.path(), "merged.csv", &sweep_csv(&[0.0]));
    let err = plot_file(&merged, &spec("log10_res_fro", Some("norm")), &dir.path().join("x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"norm\"") && err.contains("merged.csv") && err.contains("heads, mask"), "{err}");
    // A run has no parameters: any `by` is an error.
    let run = write(dir.path(), "layers.csv", &run_csv());
    let err =
        plot_file(&run, &spec("log10_res_fro", Some("mask")), &dir.path().join("x")).unwrap_err().to_string();
    assert!(err.contains("\"mask\"") && err.contains("layers.csv"), "{err}");
}

#[test]
fn unreadable_empty_and_malformed_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let missing = dir.path().join("missing.csv");
    let err = format!("{:#}", plot_file(&missing, &spec("mu", None), &out).unwrap_err());
    assert!(err.contains("missing.csv"), "{err}");

    let empty = write(dir.path(), "empty.csv", "");
    let err = plot_file(&empty, &spec("mu", None), &out).unwrap_err().to_string();
    assert!(err.contains("empty.csv") && err.contains("empty"), "{err}");

    let header_only = write(dir.path(), "header.csv", &format!("{RUN_HEADER}\n"));
    let err = plot_file(&header_only, &spec("mu", None), &out).unwrap_err().to_string();
    assert!(err.contains("header.csv") && err.contains("no data rows"), "{err}");

    let bad_number = write(dir.path(), "bad.csv", &format!("{RUN_HEADER}\n0,mu,abc,0,0,0,0,1,0\n"));
    let err = plot_file(&bad_number, &spec("mu", None), &out).unwrap_err().to_string();
    assert!(err.contains("bad.csv") && err.contains("line 2") && err.contains("abc"), "{err}");

    let other = write(dir.path(), "other.csv", "a,b\n1,2\n");
    let err = plot_file(&other, &spec("mu", None), &out).unwrap_err().to_string();
    assert!(err.contains("other.csv") && err.contains("`layer`"), "{err}");
    assert!(!out.with_extension("svg").exists() && !out.with_extension("png").exists());
}
