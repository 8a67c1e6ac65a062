//! Bad input: no input makes the spec parser, the configuration loader, `--set`, the shard parser
//! or the command line panic, and every error names what was wrong (fuzzed with proptest; each
//! property prints how many cases ran); then each validated field, table by table.

use clap::{CommandFactory, Parser};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rankcollapse::cli::{Cli, Command, SweepCommand};
use rankcollapse::config::Config;
use rankcollapse::sweep::spec::{config_id, parse_set, Shard, Spec};
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;
use toml::Value;

/// Cases per property (7 properties; the file runs in well under a minute on 2 cores).
const CASES: u32 = 2000;

/// The proptest seed unless PROPTEST_RNG_SEED gives one.
const SEED: u64 = 20261123;

/// Runs `test` on `CASES` inputs drawn from `strategy`; a panic inside is a failure (proptest
/// catches it and shrinks the input). Prints the number of cases that ran and the time.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    // A fixed, printed seed (PROPTEST_RNG_SEED=N picks another): a failure reproduces.
    let defaults = ProptestConfig::default();
    let rng_seed = match defaults.rng_seed {
        proptest::test_runner::RngSeed::Random => proptest::test_runner::RngSeed::Fixed(SEED),
        fixed => fixed,
    };
    let config = ProptestConfig { cases: CASES, failure_persistence: None, rng_seed, ..defaults };
    let ran = Cell::new(0u32);
    let started = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |v| {
        ran.set(ran.get() + 1);
        test(v)
    });
    if let Err(e) = result {
        panic!("{name} (seed {rng_seed}): {e}");
    }
    eprintln!(
        "fuzz {name}: {} cases in {:.2} s, seed {rng_seed}",
        ran.get(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(ran.get(), CASES, "{name}: every case ran");
}

/// The keys of the sweep spec's own tables (besides the configuration's).
const SPEC_KEYS: &[&str] = &["sweep", "fixed", "grid", "exclude", "name", "seed", "repeats"];

/// A valid key, a near miss of one (one character dropped, doubled, swapped or replaced, or `_`
/// written `-`), or garbage.
fn key(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    let near = (prop::sample::select(valid), any::<prop::sample::Index>(), 0..5u8).prop_map(|(k, at, op)| {
        let mut c: Vec<char> = k.chars().collect();
        let i = at.index(c.len());
        match op {
            0 => drop(c.remove(i)),
            1 => c.insert(i, c[i]),
            2 if i + 1 < c.len() => c.swap(i, i + 1),
            3 => c[i] = 'x',
            _ => c.iter_mut().filter(|ch| **ch == '_').for_each(|ch| *ch = '-'),
        }
        c.into_iter().collect::<String>()
    });
    prop_oneof![3 => prop::sample::select(valid).prop_map(String::from), 1 => near, 1 => "[a-z_-]{0,12}", 1 => ".{0,6}"]
}

/// Strings a field might be given: every enumerated spelling, near misses, numbers as text.
const WORDS: &[&str] = &[
    "full",
    "causal",
    "window:0",
    "window:2",
    "window:99",
    "causal-window:3",
    "causal-window:",
    "softmax",
    "markov",
    "uniform",
    "identity",
    "none",
    "pre-ln",
    "post-rms",
    "sphere",
    "standard",
    "scaled:1,1",
    "scaled:nan,1",
    "relu:1",
    "gelu:2",
    "relu:0",
    "gelu:1e300",
    "gaussian",
    "gaussian:-1",
    "gaussian:0.5",
    "orthogonal",
    "scaled-identity:inf",
    "orthonormal",
    "shared:0.5",
    "shared:2",
    "auto",
    "cpu",
    "gpu",
    "f32",
    "f64",
    "small",
    "my sweep",
    "",
    "nan",
    "inf",
    "-1",
    "3",
    "diagonal",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(&[0i64, 1, 2, 3, 4, 8, 32, -1, 1 << 20, 1 << 33, i64::MAX, i64::MIN][..])
            .prop_map(Value::Integer),
        any::<i64>().prop_map(Value::Integer),
        prop::sample::select(&[0.0, -0.0, 0.5, 2.0, 1e308, f64::NAN, f64::INFINITY, f64::NEG_INFINITY][..])
            .prop_map(Value::Float),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.into())),
        ".{0,10}".prop_map(Value::String),
    ]
}

/// Values of every type, nested arrays and tables included.
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

fn table(
    keys: impl Strategy<Value = String>,
    values: impl Strategy<Value = Value>,
    n: usize,
) -> impl Strategy<Value = toml::Table> {
    prop::collection::btree_map(keys, values, 0..n).prop_map(|m| m.into_iter().collect())
}

/// For each configuration key, the candidate values it accepts on its own (type and spelling):
/// specs built from these get past the type checks, so the fuzz reaches `expand` and `validate`.
fn typed_values() -> &'static [(&'static str, Vec<Value>)] {
    static TYPED: OnceLock<Vec<(&'static str, Vec<Value>)>> = OnceLock::new();
    TYPED.get_or_init(|| {
        let mut candidates: Vec<Value> = [0i64, 1, 2, 3, 4, 8, 16, -1, 1 << 33].map(Value::Integer).to_vec();
        candidates.extend([0.5, 2.0, 1e-5, f64::NAN].map(Value::Float));
        candidates.extend([true, false].map(Value::Boolean));
        candidates.extend(WORDS.iter().map(|w| Value::String(w.to_string())));
        let accepts = |k: &str, v: &Value| {
            let t: toml::Table = [(k.to_string(), v.clone())].into_iter().collect();
            Value::Table(t).try_into::<Config>().is_ok()
        };
        let typed: Vec<(&'static str, Vec<Value>)> = Config::keys()
            .iter()
            .filter(|k| **k != "seed")
            .map(|&k| (k, candidates.iter().filter(|v| accepts(k, v)).cloned().collect()))
            .collect();
        assert!(typed.iter().all(|(_, v)| !v.is_empty()), "{typed:?}");
        typed
    })
}

/// A key with one to three values it accepts.
fn typed_entry() -> impl Strategy<Value = (String, Vec<Value>)> {
    (any::<prop::sample::Index>(), prop::collection::vec(any::<prop::sample::Index>(), 1..4)).prop_map(
        |(k, vs)| {
            let (key, values) = &typed_values()[k.index(typed_values().len())];
            (key.to_string(), vs.iter().map(|i| values[i.index(values.len())].clone()).collect())
        },
    )
}

fn typed_table(n: usize, arrays: bool) -> impl Strategy<Value = toml::Table> {
    prop::collection::vec(typed_entry(), 0..n).prop_map(move |entries| {
        entries
            .into_iter()
            .map(|(k, mut vs)| (k, if arrays { Value::Array(vs) } else { vs.swap_remove(0) }))
            .collect()
    })
}

/// A sweep spec built from random sections: a header, fixed values, a grid, exclusions, and now
/// and then a stray key. Each section is mostly built from keys with values they accept (so the
/// spec reaches expansion), else from keys valid, nearly valid or garbage with values of any type.
fn spec_document() -> impl Strategy<Value = toml::Table> {
    let config_keys = || key(Config::keys());
    let good_header = ("[a-z]{1,8}", 0..100i64, 1..4i64).prop_map(|(name, seed, repeats)| {
        [("name", Value::String(name)), ("seed", Value::Integer(seed)), ("repeats", Value::Integer(repeats))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<toml::Table>()
    });
    let header = prop_oneof![
        3 => good_header,
        1 => table(key(SPEC_KEYS), prop_oneof![leaf(), Just(Value::String("small".into()))], 4)
    ];
    let grid_value =
        prop_oneof![3 => prop::collection::vec(leaf(), 0..4).prop_map(Value::Array), 1 => value()];
    let exclude = prop_oneof![
        3 => prop::collection::vec(typed_table(3, false).prop_map(Value::Table), 0..3),
        1 => prop::collection::vec(table(config_keys(), leaf(), 3).prop_map(Value::Table), 0..3)
    ];
    (
        prop::option::weighted(0.95, header),
        prop::option::of(prop_oneof![3 => typed_table(4, false), 1 => table(config_keys(), value(), 5)]),
        prop::option::of(prop_oneof![3 => typed_table(4, true), 1 => table(config_keys(), grid_value, 4)]),
        prop::option::of(exclude),
        prop::option::weighted(0.05, (key(SPEC_KEYS), value())),
    )
        .prop_map(|(header, fixed, grid, exclude, stray)| {
            let mut doc = toml::Table::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    doc.insert(k.into(), v);
                }
            };
            put("sweep", header.map(Value::Table));
            put("fixed", fixed.map(Value::Table));
            put("grid", grid.map(Value::Table));
            put("exclude", exclude.map(Value::Array));
            if let Some((k, v)) = stray {
                doc.insert(k, v);
            }
            doc
        })
}

/// Every key a document uses, at any depth.
fn keys_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                out.push(k.clone());
                keys_of(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys_of(v, out)),
        _ => {}
    }
}

/// Whether `text` mentions `word` as a whole word (not inside a longer name).
fn mentions(text: &str, word: &str) -> bool {
    let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
    !word.is_empty()
        && text.match_indices(word).any(|(i, _)| {
            !part(text[..i].chars().next_back()) && !part(text[i + word.len()..].chars().next())
        })
}

/// An error message names something: a key the input used, or a configuration key (a field whose
/// default clashes with what was given), after the prefixes that only say where the input was.
fn names_a_key(message: &str, used: &[String]) -> bool {
    let body = message.trim_start_matches("sweep spec: ");
    let body =
        if body.starts_with("sweep point (") { body.split_once("): ").map_or(body, |x| x.1) } else { body };
    used.iter().any(|k| mentions(body, k))
        || Config::keys().iter().chain(SPEC_KEYS).any(|k| mentions(body, k))
}

#[test]
fn fuzz_sweep_specs_from_arbitrary_text() {
    fuzz(
        "sweep spec text",
        prop_oneof![".{0,200}", "(\\[sweep\\]\nname = \"a\"\n)?(\\[(grid|fixed)\\]\n)?[a-z_]{1,8} = .{0,40}"],
        |text| {
            match Spec::parse(&text) {
                Ok(spec) => {
                    if let Err(e) = spec.expand() {
                        prop_assert!(!e.to_string().trim().is_empty());
                    }
                }
                Err(e) => prop_assert!(!e.to_string().trim().is_empty(), "empty error for {text:?}"),
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_structured_sweep_specs_and_overrides() {
    let expanded = Cell::new(0);
    let sets = prop::collection::vec(
        (
            key(Config::keys()),
            prop_oneof![prop::sample::select(WORDS).prop_map(String::from), "[0-9]{1,3}", ".{0,8}"],
        ),
        0..3,
    );
    fuzz("structured sweep spec + --set", (spec_document(), sets), |(doc, sets)| {
        let text = toml::to_string(&doc).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let mut used = Vec::new();
        keys_of(&Value::Table(doc), &mut used);
        let spec = match Spec::parse(&text) {
            Ok(spec) => spec,
            Err(e) => {
                prop_assert!(names_a_key(&e.to_string(), &used), "{e}\nfor:\n{text}");
                return Ok(());
            }
        };
        let mut parsed = Vec::new();
        for (k, v) in &sets {
            let arg = format!("{k}={v}");
            match parse_set(&arg) {
                Ok(kv) => {
                    prop_assert!(
                        Config::keys().contains(&kv.0.as_str()),
                        "--set {arg:?} accepted key {}",
                        kv.0
                    );
                    parsed.push(kv);
                }
                Err(e) => {
                    let e = e.to_string();
                    // The key as written, or escaped as `{:?}` writes it (unprintable characters).
                    let written = arg.split_once('=').map_or(&*arg, |x| x.0).trim();
                    let escaped = format!("{written:?}");
                    prop_assert!(
                        e.contains("--set") && (e.contains(written) || e.contains(escaped.trim_matches('"'))),
                        "{e}"
                    );
                    return Ok(());
                }
            }
        }
        used.extend(parsed.iter().map(|(k, _)| k.clone()));
        match spec.with_overrides(&parsed).and_then(|s| s.expand()) {
            Ok(points) => {
                expanded.set(expanded.get() + 1);
                for p in &points {
                    prop_assert!(p.config.validate().is_ok(), "point {} does not validate", p.id);
                }
            }
            Err(e) => prop_assert!(names_a_key(&e.to_string(), &used), "{e}\nfor:\n{text}\nsets {sets:?}"),
        }
        Ok(())
    });
    eprintln!("  of which {} expanded to points", expanded.get());
}

#[test]
fn fuzz_configuration_files_and_validation() {
    let validated = Cell::new(0);
    fuzz("--config TOML + validate", table(key(Config::keys()), value(), 7), |doc| {
        let text = toml::to_string(&doc).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let unknown: Vec<&String> = doc.keys().filter(|k| !Config::keys().contains(&k.as_str())).collect();
        match Config::from_toml(&text) {
            Err(e) => {
                let e = e.to_string();
                if unknown.is_empty() {
                    prop_assert!(doc.keys().any(|k| e.contains(k.as_str())), "{e}\nfor:\n{text}");
                } else {
                    prop_assert!(
                        unknown.iter().any(|k| e.contains(&format!("`{k}`"))) && e.contains("did you mean `"),
                        "{e}"
                    );
                }
            }
            Ok(c) => {
                prop_assert!(unknown.is_empty(), "unknown keys {unknown:?} accepted");
                match c.validate() {
                    Ok(()) => validated.set(validated.get() + 1),
                    Err(e) => {
                        prop_assert!(Config::keys().contains(&e.field), "{e}: {} is not a key", e.field);
                        prop_assert!(
                            e.to_string().starts_with(e.field) && e.to_string().contains(&e.value),
                            "{e}"
                        );
                    }
                }
            }
        }
        Ok(())
    });
    eprintln!("  of which {} validated", validated.get());
    fuzz("--config arbitrary text", ".{0,120}", |text| {
        if let Err(e) = Config::from_toml(&text).and_then(|c| Ok(c.validate()?)) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
        Ok(())
    });
}

#[test]
fn fuzz_set_and_shard_strings() {
    fuzz(
        "--set KEY=VALUE",
        (
            key(Config::keys()),
            "=?",
            prop_oneof![prop::sample::select(WORDS).prop_map(String::from), ".{0,12}"],
        ),
        |(k, eq, v)| {
            let arg = format!("{k}{eq}{v}");
            match parse_set(&arg) {
                Ok((key, _)) => {
                    prop_assert!(Config::keys().contains(&key.as_str()), "{arg:?} gave key {key}")
                }
                Err(e) => prop_assert!(e.to_string().contains("--set"), "{e}"),
            }
            Ok(())
        },
    );
    let number = || prop_oneof![(0usize..6).prop_map(|n| n.to_string()), "-?[0-9]{0,22}", ".{0,3}"];
    fuzz(
        "--shard I/N and the shard environment",
        (number(), "/?", number(), 0..3u8),
        |(i, slash, n, env)| {
            let s = format!("{i}{slash}{n}");
            match s.parse::<Shard>() {
                Ok(shard) => {
                    prop_assert!(shard.index < shard.count && s.contains('/'), "{s:?} gave {shard:?}")
                }
                Err(e) => prop_assert!(
                    e.to_string().contains(&format!("--shard {s:?}")) && e.to_string().contains("0 <= I < N"),
                    "{e}"
                ),
            }
            let vars: &[(&str, &String)] = match env {
                0 => &[("SLURM_ARRAY_TASK_ID", &i), ("SLURM_ARRAY_TASK_COUNT", &n)],
                1 => &[
                    ("SLURM_ARRAY_TASK_ID", &i),
                    ("SLURM_ARRAY_TASK_COUNT", &n),
                    ("SLURM_ARRAY_TASK_MIN", &slash),
                ],
                _ => &[("JOB_COMPLETION_INDEX", &i), ("RANKCOLLAPSE_SHARD_COUNT", &n)],
            };
            match Shard::from_env(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())) {
                Ok(Some(shard)) => prop_assert!(shard.index < shard.count),
                Ok(None) => prop_assert!(false, "{vars:?} set but no shard"),
                Err(e) => prop_assert!(vars.iter().any(|(k, _)| e.to_string().contains(k)), "{e}"),
            }
            Ok(())
        },
    );
}

/// A subcommand's path (`["sweep", "run"]`) and its long flags, each with whether it takes a value.
type Subcommand = (Vec<String>, Vec<(String, bool)>);

/// Subcommands and their long flags, read from clap (the one definition of the command line).
fn subcommands() -> Vec<Subcommand> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Subcommand>) {
        let flags = cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| (format!("--{l}"), a.get_action().takes_values())))
            .filter(|(l, _)| l != "--help" && l != "--version")
            .collect();
        if cmd.has_subcommands() {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let mut p = path.clone();
                p.push(sub.get_name().to_string());
                walk(sub, p, out);
            }
        } else {
            out.push((path, flags));
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), Vec::new(), &mut out);
    out
}

const FLAG_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "3",
    "7",
    "32",
    "4096",
    "4097",
    "100000",
    "100001",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "nan",
    "inf",
    "-inf",
    "0.5",
    "",
    "full",
    "window:0",
    "window:5",
    "causal-window:99",
    "relu:0",
    "gelu:1e300",
    "relu:1e12",
    "scaled:nan,1",
    "gaussian:-1",
    "shared:2",
    "orthonormal",
    "none",
    "standard",
    "pre-ln",
    "f32",
    "gpu",
    "cpu",
    "3/2",
    "0/0",
    "1/4",
    "json",
    "slurm",
    "k8s",
    "Bad_Name",
    "a b",
    "depth=3",
    "dept=3",
    "mask=diagonal",
    "tokens=1e9",
    "/nonexistent/x.toml",
];

#[test]
fn fuzz_command_lines() {
    let commands = subcommands();
    assert!(
        commands.len() >= 8 && commands.iter().any(|(p, f)| p == &["run"] && f.len() > 30),
        "{commands:?}"
    );
    let n = commands.len();
    let run = commands.iter().position(|(p, _)| p == &["run"]).unwrap_or_default();
    let arg = (
        any::<prop::sample::Index>(),
        prop_oneof![4 => prop::sample::select(FLAG_VALUES).prop_map(String::from), 1 => ".{0,6}"],
    );
    let (to_config_errors, to_config_ok) = (Cell::new(0), Cell::new(0));
    fuzz(
        "command lines (try_parse_from + to_config)",
        (prop_oneof![Just(run), 0..n], prop::collection::vec(arg, 0..7), any::<bool>()),
        |(c, args, positional)| {
            let (path, flags) = &commands[c];
            let mut argv: Vec<String> = vec!["rankcollapse".into()];
            argv.extend(path.iter().cloned());
            if positional {
                argv.push("/nonexistent/input".into());
            }
            for (flag, value) in &args {
                let (name, takes_value) =
                    &flags.get(flag.index(flags.len().max(1))).cloned().unwrap_or(("--x".into(), false));
                argv.push(name.clone());
                if *takes_value {
                    argv.push(value.clone());
                }
            }
            // A flag whose value clap rejects must be named in the error; it is then dropped
            // and the rest parsed again, so that most command lines reach `to_config`.
            let parsed = loop {
                match Cli::try_parse_from(&argv) {
                    Ok(cli) => break Some(cli),
                    Err(e) => {
                        let text = e.render().to_string();
                        prop_assert!(!text.trim().is_empty());
                        if !matches!(
                            e.kind(),
                            clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue
                        ) {
                            break None;
                        }
                        let at = argv.iter().rposition(|a| {
                            a.starts_with("--")
                                && text.contains(&format!("'{a} <"))
                                && flags.iter().any(|(f, _)| f == a)
                        });
                        prop_assert!(
                            at.is_some(),
                            "the error names no flag of the command line:\n{text}\nfor {argv:?}"
                        );
                        let at = at.unwrap_or_default();
                        argv.drain(at..(at + 2).min(argv.len()));
                    }
                }
            };
            let Some(cli) = parsed else { return Ok(()) };
            match cli.command {
                Command::Run(run) => {
                    to_config_ok.set(to_config_ok.get() + 1);
                    if let Err(e) = run.to_config() {
                        to_config_ok.set(to_config_ok.get() - 1);
                        to_config_errors.set(to_config_errors.get() + 1);
                        let e = e.to_string();
                        let named = Config::keys().iter().any(|k| e.contains(k))
                            || e.contains("--config")
                            || e.contains("--sequences-csv");
                        prop_assert!(named, "{e}\nfor {argv:?}");
                        if let Some(flag) = e.split("(set by ").nth(1) {
                            prop_assert!(
                                argv.iter().any(|a| flag.starts_with(a.as_str())),
                                "{e}\nfor {argv:?}"
                            );
                        }
                    }
                }
                Command::Sweep(SweepCommand::Run(rankcollapse::cli::SweepRunArgs { set, .. }))
                | Command::Sweep(SweepCommand::Plan(rankcollapse::cli::SweepPlanArgs { set, .. })) => {
                    for s in set {
                        if let Err(e) = parse_set(&s) {
                            prop_assert!(e.to_string().contains("--set"), "{e}");
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        },
    );
    eprintln!(
        "  of which {} reached to_config: {} accepted, {} rejected",
        to_config_ok.get() + to_config_errors.get(),
        to_config_ok.get(),
        to_config_errors.get()
    );
}

/// Runs `rankcollapse ARGS` through the parser and `to_config` (no computation) and returns the
/// error message, or None when the command line is accepted.
fn cli_error(args: &[&str]) -> Option<String> {
    let argv = std::iter::once("rankcollapse").chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Err(e) => Some(e.render().to_string()),
        Ok(Cli { command: Command::Run(run) }) => run.to_config().err().map(|e| e.to_string()),
        Ok(_) => None,
    }
}

#[test]
fn each_newly_validated_flag_names_the_field_the_value_and_what_is_allowed() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["run", "--head-rank", "40"], &["head_rank", "40", "at most width = 32", "set by --head-rank"]),
        (&["run", "--tokens", "100000000", "--width", "64"], &["tokens", "100000000", "4294967296"]),
        (
            &["run", "--heads", "2", "--value-dim", "18446744073709551615"],
            &["value_dim", "18446744073709551615", "4294967296"],
        ),
        (&["run", "--mlp", "relu:1e12"], &["mlp", "relu:1000000000000", "K x width"]),
        (&["run", "--tokens", "70000", "--width", "1"], &["tokens", "70000", "spectrum_every = 0"]),
        (
            &["run", "--sequences", "4000000000", "--depth", "1000"],
            &["sequences", "4000000000", "1073741824"],
        ),
        (&["run", "--gpu-memory-mb", "2000000"], &["gpu_memory_mb", "2000000", "1048576"]),
        (&["run", "--threads", "5000"], &["--threads", "5000", "4096"]),
        (&["run", "--depth", "-1"], &["--depth", "-1", "whole number"]),
        (&["run", "--seed", "x"], &["--seed", "'x'", "whole number"]),
        (&["run", "--norm-gain", "inf"], &["--norm-gain", "inf", "finite"]),
        (&["run", "--norm-eps", "-1"], &["norm_eps", "-1", "> 0", "set by --norm-eps"]),
        (&["run", "--sequences-csv"], &["--sequences-csv", "--out"]),
        (&["run", "--heads", "3"], &["out_proj", "identity", "30 x 32", "the default"]),
        (&["sweep", "plan", "s.toml", "--shards", "0"], &["--shards", "'0'", "1 to 100000"]),
        (&["sweep", "plan", "s.toml", "--shards", "100001"], &["--shards", "100001"]),
        (&["sweep", "plan", "s.toml", "--pvc", "Bad_Claim"], &["--pvc", "Bad_Claim", "DNS-1123"]),
        (&["sweep", "plan", "s.toml", "--image", "a b"], &["--image", "a b", "image reference"]),
        (&["sweep", "plan", "s.toml", "--emit", "slurm"], &["--out"]),
        (&["sweep", "run", "s.toml", "--out", "d", "--shard", "3/2"], &["--shard", "3/2", "0 <= I < N"]),
        (&["sweep", "run", "s.toml", "--out", "d", "--shard", "0/0"], &["--shard", "0/0", "0 <= I < N"]),
        (&["sweep", "run", "s.toml", "--out", "d", "--shard", "-1/2"], &["--shard", "-1/2"]),
        (&["sweep", "run", "s.toml", "--out", "d", "--threads", "99999"], &["--threads", "99999"]),
        (&["reproduce", "all", "--out", "d", "--threads", "-2"], &["--threads", "-2"]),
    ];
    for (args, needles) in cases {
        let e = cli_error(args).unwrap_or_else(|| panic!("{args:?} was accepted"));
        for n in *needles {
            assert!(e.contains(n), "{args:?}: the error does not mention {n:?}:\n{e}");
        }
    }
    // The same sizes just inside the limits are accepted: the limits are where they say.
    for args in [
        &["run", "--head-rank", "32"][..],
        &["run", "--tokens", "65536", "--width", "65536", "--spectrum-every", "0"],
        &["run", "--tokens", "65536", "--width", "1"],
        &["run", "--tokens", "70000", "--width", "1", "--spectrum-every", "0"],
        &["run", "--gpu-memory-mb", "1048576", "--threads", "4096"],
        &["run", "--sequences", "1073741824", "--depth", "1"],
        &[
            "sweep",
            "plan",
            "s.toml",
            "--shards",
            "100000",
            "--pvc",
            "claim-1.x",
            "--image",
            "reg.io/a/b:1@sha256",
        ],
    ] {
        assert_eq!(cli_error(args), None, "{args:?}");
    }
}

#[test]
fn unknown_keys_are_rejected_with_the_closest_valid_name() {
    let config_cases = [
        ("depht = 3", "depht", "depth"),
        ("head-rank = 2", "head-rank", "head_rank"),
        ("remove_outliers = true", "remove_outliers", "remove_outlier"),
        ("gpu_memory = 10", "gpu_memory", "gpu_memory_mb"),
        ("profiel = true", "profiel", "profile"),
    ];
    for (text, key, closest) in config_cases {
        let e = Config::from_toml(text).unwrap_err().to_string();
        assert!(
            e.contains(&format!("unknown key `{key}`")) && e.contains(&format!("did you mean `{closest}`?")),
            "{e}"
        );
        assert!(!e.contains("valid keys"), "a close key needs no listing: {e}");
    }
    let e = Config::from_toml("completely_unrelated = 1").unwrap_err().to_string();
    assert!(e.contains("valid keys: depth, tokens,") && e.contains("profile"), "{e}");

    let spec = include_str!("../data/sweep_small.toml");
    let spec_cases = [
        (spec.replace("[sweep]", "[sweeep]"), "`sweeep` at the top of the sweep spec: did you mean `sweep`?"),
        (spec.replace("repeats = 2", "repeat = 2"), "`repeat` in [sweep]: did you mean `repeats`?"),
        (spec.replace("width = 8", "widht = 8"), "`widht` in [fixed]: did you mean `width`?"),
        (spec.replace("mask = [", "maks = ["), "`maks` in [grid]: did you mean `mask`?"),
        (
            spec.replace("[[exclude]]\nmask", "[[exclude]]\nmsak"),
            "`msak` in [[exclude]]: did you mean `mask`?",
        ),
    ];
    for (text, needle) in spec_cases {
        let e = Spec::parse(&text).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    let e = parse_set("tokns=4").unwrap_err().to_string();
    assert!(e.contains("`tokns` in --set \"tokns=4\": did you mean `tokens`?"), "{e}");
}

#[test]
fn sweep_spec_values_names_and_sizes_are_checked_where_they_are_written() {
    let spec = include_str!("../data/sweep_small.toml");
    let cases = [
        (
            spec.replace("name = \"small\"", "name = \"my sweep\""),
            vec!["name", "\"my sweep\"", "A-Z a-z 0-9 . _ -"],
        ),
        (
            spec.replace("repeats = 2", "repeats = 400000"),
            vec!["2400000 points", "depth (2) x mask (3) x repeats (400000)", "1000000"],
        ),
        (
            spec.replace("depth = [2, 3]", "depth = [2, \"x\"]"),
            vec!["[grid] depth value = \"x\"", "expected usize"],
        ),
        (spec.replace("tokens = 8", "tokens = -8"), vec!["[fixed] tokens = -8", "usize"]),
        (spec.replace("\"window:2\"]", "\"window:x\"]"), vec!["[grid] mask value = \"window:x\"", "W >= 1"]),
        (
            spec.replace("[[exclude]]\nmask = \"full\"", "[[exclude]]\nmask = \"window:3\""),
            vec!["[[exclude]] mask = \"window:3\"", "matches no point", "\"full\", \"causal\""],
        ),
        (
            spec.replace("[[exclude]]\nmask = \"full\"", "[[exclude]]\nmask = 3"),
            vec!["[[exclude]] mask = 3", "invalid type"],
        ),
        (spec.replace("depth = [2, 3]", "depth = []"), vec!["[grid] depth", "non-empty array"]),
    ];
    for (text, needles) in cases {
        let e = Spec::parse(&text).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "the error does not mention {n:?}: {e}");
        }
    }
    // --set values are checked like [fixed] ones, and the spec after --set is checked again.
    let e = parse_set("mask=diagonal").unwrap_err().to_string();
    assert!(e.contains("--set mask = \"diagonal\"") && e.contains("causal-window:W"), "{e}");
    let small = Spec::parse(spec).unwrap();
    let e = small.with_overrides(&[("tokns".into(), Value::Integer(4))]).unwrap_err().to_string();
    assert!(e.contains("with --set: unknown key `tokns` in [fixed]: did you mean `tokens`?"), "{e}");
    // A swept key fixed by --set leaves its exclusion behind without complaint.
    let fixed = Spec::parse(spec).unwrap().with_overrides(&[parse_set("mask=causal").unwrap()]).unwrap();
    assert_eq!(fixed.expand().unwrap().len(), 4);
    // Shards from the environment name the variables that are wrong.
    let e = Shard::from_env(|k| match k {
        "SLURM_ARRAY_TASK_ID" => Some("5".into()),
        "SLURM_ARRAY_TASK_COUNT" => Some("3".into()),
        _ => None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("SLURM_ARRAY_TASK_ID=5") && e.contains("SLURM_ARRAY_TASK_COUNT=3"), "{e}");
    let e = Shard::from_env(|k| {
        (k == "JOB_COMPLETION_INDEX" || k == "RANKCOLLAPSE_SHARD_COUNT").then(|| "x".into())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("JOB_COMPLETION_INDEX=\"x\"") && e.contains("whole number"), "{e}");
}

/// Point ids of tests/data/sweep_small.toml as the version before `profile` existed computed them
/// (commit 516a172): execution settings must never renumber a sweep.
const SMALL_SWEEP_IDS: [&str; 10] = [
    "e04eb73fdf76121c",
    "cbe14b1c093d24ff",
    "2fdadc0571b17dbc",
    "a229be6ef0c0cf56",
    "1648a7bb4378a3e4",
    "7c94f57acc10d47d",
    "8a7da8c58046a9df",
    "40b85a96956a0e46",
    "f99236439e351652",
    "b6d97bb589cf8313",
];

#[test]
fn profile_is_an_execution_setting_outside_point_ids() {
    let points = Spec::parse(include_str!("../data/sweep_small.toml")).unwrap().expand().unwrap();
    let ids: Vec<&str> = points.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, SMALL_SWEEP_IDS);
    for p in &points {
        let profiled = Config { profile: true, ..p.config.clone() };
        assert_eq!(config_id(&profiled), p.id);
        let json = serde_json::to_value(&p.config).unwrap();
        assert!(json.get("profile").is_none(), "the default is not serialised: {json}");
        assert_eq!(serde_json::to_value(&profiled).unwrap()["profile"], true);
    }
    let spec =
        include_str!("../data/sweep_small.toml").replace("sequences = 3", "sequences = 3\nprofile = true");
    let profiled = Spec::parse(&spec).unwrap().expand().unwrap();
    assert_eq!(profiled.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), SMALL_SWEEP_IDS);
    assert!(profiled.iter().all(|p| p.config.profile));
    let run = |args: &[&str]| match Cli::try_parse_from(args) {
        Ok(Cli { command: Command::Run(r) }) => r.to_config().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(run(&["rankcollapse", "run", "--profile"]).profile);
    assert!(!run(&["rankcollapse", "run"]).profile);
}
