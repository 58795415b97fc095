//! Options from the environment and from a config file, as cluster tools
//! expect: every option `--some-option` of every subcommand can also be
//! given as the environment variable `ANNCAT_SOME_OPTION`, or in a TOML file
//! named by `--config FILE` (or `ANNCAT_CONFIG`) with one table per
//! subcommand:
//!
//! ```toml
//! [worker]
//! memory-limit = "4GiB"
//! allow-write = ["/shared/out"]
//! ```
//!
//! Precedence: the command line, then the environment, then the file, then
//! the built-in default. The file's values become the options' defaults, so
//! clap still parses and checks every value.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "ANNCAT_CONFIG";

/// What can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read config file: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML or names something that is not an option.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (one line).
        message: String,
    },
}

/// The environment variable of the long option `long` (`memory-limit` →
/// `ANNCAT_MEMORY_LIMIT`).
pub fn env_name(long: &str) -> String {
    format!("ANNCAT_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// The options of a subcommand that can be configured: those with a long
/// name, except `--help`, `--version` and `--config`.
pub fn configurable(sub: &Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments().filter(|a| {
        a.get_long()
            .is_some_and(|l| !matches!(l, "help" | "version" | "config"))
    })
}

/// The config file named on the command line (`--config FILE` or
/// `--config=FILE`) or by [`CONFIG_ENV`].
pub fn config_path<I, T>(args: I) -> Option<PathBuf>
where
    I: IntoIterator<Item = T>,
    T: AsRef<std::ffi::OsStr>,
{
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let a = a.as_ref().to_string_lossy().into_owned();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return args.next().map(|p| PathBuf::from(p.as_ref()));
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os(CONFIG_ENV).map(PathBuf::from)
}

/// `cmd` with an `ANNCAT_*` environment variable for every option of every
/// subcommand, and, when `config` is given, the file's values as defaults.
pub fn apply(cmd: Command, config: Option<&Path>) -> Result<Command, ConfigError> {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd;
    for name in &names {
        cmd = cmd.mut_subcommand(name, |sub| {
            let longs: Vec<(String, String)> = configurable(&sub)
                .filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_string())))
                .collect();
            longs.into_iter().fold(sub, |sub, (id, long)| {
                sub.mut_arg(id, |a| a.env(env_name(&long)))
            })
        });
    }
    let Some(path) = config else {
        return Ok(cmd);
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.message().replace('\n', " ")))?;
    for (section, values) in table {
        let toml::Value::Table(values) = values else {
            return Err(invalid(format!(
                "`{section}` must be a table such as [concat] holding that subcommand's options"
            )));
        };
        let Some(sub) = cmd.find_subcommand(&section) else {
            return Err(invalid(format!(
                "[{section}] is not a subcommand (one of: {})",
                names.join(", ")
            )));
        };
        let mut defaults = Vec::new();
        for (key, value) in values {
            let Some(arg) = configurable(sub).find(|a| a.get_long() == Some(key.as_str())) else {
                return Err(invalid(format!("[{section}] has no option `{key}`")));
            };
            let strings = option_values(&value).ok_or_else(|| {
                invalid(format!(
                    "[{section}] {key}: give a string, number, boolean or a list of them"
                ))
            })?;
            let flag = matches!(arg.get_action(), ArgAction::SetTrue);
            if flag && !matches!(value, toml::Value::Boolean(_)) {
                return Err(invalid(format!("[{section}] {key}: give true or false")));
            }
            if strings.len() > 1 && !matches!(arg.get_action(), ArgAction::Append) {
                return Err(invalid(format!("[{section}] {key}: takes one value")));
            }
            defaults.push((arg.get_id().to_string(), strings));
        }
        cmd = cmd.mut_subcommand(&section, |sub| {
            defaults.into_iter().fold(sub, |sub, (id, strings)| {
                sub.mut_arg(id, |a| a.required(false).default_values(strings))
            })
        });
    }
    Ok(cmd)
}

fn option_values(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Integer(i) => Some(vec![i.to_string()]),
        toml::Value::Float(f) => Some(vec![f.to_string()]),
        toml::Value::Boolean(b) => Some(vec![b.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                other => option_values(other).and_then(|mut v| v.pop()),
            })
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Work {
            #[arg(long)]
            memory_limit: String,
            #[arg(long, default_value_t = 1)]
            threads: usize,
            #[arg(long)]
            allow_write: Vec<PathBuf>,
            #[arg(long)]
            overwrite: bool,
        },
    }

    fn parse(args: &[&str], config: &str) -> Result<Sub, String> {
        use clap::{CommandFactory, FromArgMatches};
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let cmd = apply(Cli::command(), Some(&path)).map_err(|e| e.to_string())?;
        let matches = cmd
            .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&matches)
            .map(|c| c.command)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn file_values_are_defaults_below_the_command_line() {
        let config = "[work]\nmemory-limit = \"2GiB\"\nthreads = 3\nallow-write = [\"/a\", \"/b\"]\noverwrite = true\n";
        let Sub::Work {
            memory_limit,
            threads,
            allow_write,
            overwrite,
        } = parse(&["work"], config).expect("parse");
        assert_eq!(memory_limit, "2GiB");
        assert_eq!(threads, 3);
        assert_eq!(allow_write, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(overwrite);
        let Sub::Work {
            memory_limit,
            threads,
            ..
        } = parse(
            &["work", "--threads", "5", "--memory-limit", "1GiB"],
            config,
        )
        .expect("parse");
        assert_eq!((memory_limit.as_str(), threads), ("1GiB", 5));
    }

    #[test]
    fn bad_files_name_the_file_and_the_key() {
        let e = parse(&["work"], "[work]\nmemory-limt = \"1GiB\"\n").expect_err("typo");
        assert!(e.contains("c.toml") && e.contains("memory-limt"), "{e}");
        let e = parse(&["work"], "[wrok]\n").expect_err("section");
        assert!(e.contains("[wrok]"), "{e}");
        let e = parse(&["work"], "threads = 2\n").expect_err("no table");
        assert!(e.contains("threads"), "{e}");
        let e = parse(&["work"], "[work]\noverwrite = \"yes\"\n").expect_err("flag");
        assert!(e.contains("true or false"), "{e}");
        let e = parse(&["work"], "[work\n").expect_err("toml");
        assert!(e.contains("c.toml"), "{e}");
        // Values are still checked by clap.
        let e = parse(&["work"], "[work]\nmemory-limit = \"1\"\nthreads = \"x\"\n")
            .expect_err("bad value");
        assert!(e.contains("threads"), "{e}");
    }

    /// A config file's cluster-file yields to --workers on the command line
    /// (clap does not check conflicts against defaults).
    #[test]
    fn command_line_workers_beat_a_config_files_cluster_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[concat]\ncluster-file = \"/shared/cluster.json\"\n")
            .expect("write");
        let p = path.to_string_lossy().into_owned();
        let parsed = |extra: &[&str]| {
            let mut args = vec![
                "anncat", "--config", &p, "concat", "in.zarr", "-o", "out.zarr",
            ];
            args.extend(extra);
            match crate::args::parse(args) {
                Ok(crate::args::Cli {
                    command: crate::args::Command::Concat(c),
                    ..
                }) => (c.cluster_file, c.workers),
                _ => panic!("parse"),
            }
        };
        assert_eq!(parsed(&[]).0, Some(PathBuf::from("/shared/cluster.json")));
        assert_eq!(parsed(&["--workers", "2"]), (None, Some(2)));
    }

    #[test]
    fn config_path_is_found_anywhere_before_a_double_dash() {
        assert_eq!(
            config_path(["anncat", "worker", "--config", "a.toml"]),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(["anncat", "--config=b.toml", "worker"]),
            Some(PathBuf::from("b.toml"))
        );
        assert_eq!(env_name("memory-limit"), "ANNCAT_MEMORY_LIMIT");
    }

    /// `cluster-configs/local.toml` names every option of every subcommand
    /// of the real command line (commented out where there is no default),
    /// and the real command line accepts it.
    #[test]
    fn local_toml_names_every_option() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-configs/local.toml");
        let text = std::fs::read_to_string(&path).expect("cluster-configs/local.toml");
        let cmd = crate::args::command();
        let mut section = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines() {
            let line = line.trim().trim_start_matches('#').trim();
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
            } else if let Some((key, _)) = line.split_once('=') {
                seen.insert((section.clone(), key.trim().to_string()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            for arg in configurable(sub) {
                let key = (
                    sub.get_name().to_string(),
                    arg.get_long().unwrap_or("").to_string(),
                );
                assert!(
                    seen.contains(&key),
                    "local.toml lacks [{}] {}",
                    key.0,
                    key.1
                );
            }
        }
        apply(cmd, Some(&path)).expect("local.toml is accepted");
    }
}
