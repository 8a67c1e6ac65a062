//! `rankcollapse plot` and the plot `sweep run` leaves behind: where the input CSV is and where
//! the pictures go; the drawing itself lives in `crate::plot`.

use crate::cli::PlotArgs;
use crate::plot::{plot_file, PlotSpec};
use std::path::Path;

/// `rankcollapse plot`: the input may be a run or sweep directory, or a CSV file.
pub fn plot(args: &PlotArgs) -> anyhow::Result<i32> {
    let input = if args.input.is_dir() {
        ["merged.csv", "layers.csv"].iter().map(|f| args.input.join(f)).find(|p| p.exists()).ok_or_else(
            || {
                anyhow::anyhow!(
                    "{} holds neither merged.csv (a sweep) nor layers.csv (a run)",
                    args.input.display()
                )
            },
        )?
    } else {
        args.input.clone()
    };
    let stem = args
        .out
        .clone()
        .unwrap_or_else(|| input.parent().unwrap_or(Path::new(".")).join(format!("plot-{}", args.metric)));
    let spec = PlotSpec { metric: args.metric.clone(), by: args.by.clone(), title: None };
    let (svg, png) = plot_file(&input, &spec, &stem)?;
    println!("{}\n{}", svg.display(), png.display());
    Ok(0)
}

/// The plot `sweep run` leaves when a sweep completes (log10_res_fro against layer, one line per
/// value of the first swept parameter); a failure here only warns.
pub fn default_plot(dir: &Path) {
    let spec = PlotSpec { metric: "log10_res_fro".into(), by: None, title: None };
    match plot_file(&dir.join("merged.csv"), &spec, &dir.join("plot-log10_res_fro")) {
        Ok((svg, png)) => eprintln!("[rankcollapse] plot: {} {}", svg.display(), png.display()),
        Err(e) => eprintln!("warning: no default plot: {e:#}"),
    }
}
