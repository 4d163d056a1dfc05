//! Command-line parsing: positional arguments and `--name value` options,
//! checked against what each command accepts.

use std::collections::HashMap;

/// Arguments of one command: positionals in order, options by name.
pub struct Args {
    /// Positional arguments.
    pub positional: Vec<String>,
    options: HashMap<&'static str, String>,
    flags: Vec<&'static str>,
}

impl Args {
    /// Splits `raw` into positionals, options taking a value (`valued`) and
    /// flags (`flags`); anything else starting with `--` is an error.
    pub fn parse(
        raw: &[String],
        valued: &[&'static str],
        flags: &[&'static str],
    ) -> Result<Args, String> {
        let mut args = Args {
            positional: Vec::new(),
            options: HashMap::new(),
            flags: Vec::new(),
        };
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            if arg == "--" {
                args.positional.extend(it.by_ref().cloned());
                break;
            }
            if let Some(name) = arg.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (name, None),
                };
                if let Some(&known) = valued.iter().find(|&&v| v == name) {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .cloned()
                            .ok_or(format!("option --{name} needs a value"))?,
                    };
                    if args.options.insert(known, value).is_some() {
                        return Err(format!("option --{name} given twice"));
                    }
                } else if let Some(&known) = flags.iter().find(|&&f| f == name) {
                    if inline.is_some() {
                        return Err(format!("option --{name} takes no value"));
                    }
                    args.flags.push(known);
                } else {
                    return Err(format!("unknown option --{name}"));
                }
            } else {
                args.positional.push(arg.clone());
            }
        }
        Ok(args)
    }

    /// The value of option `name`, if given.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// Whether flag `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// Exactly `names.len()` positionals, named in the error otherwise.
    pub fn positionals<const N: usize>(&self, names: [&str; N]) -> Result<[&str; N], String> {
        if self.positional.len() != N {
            return Err(format!(
                "expected {} argument{} ({}), got {}",
                N,
                if N == 1 { "" } else { "s" },
                names.join(" "),
                self.positional.len()
            ));
        }
        Ok(std::array::from_fn(|i| self.positional[i].as_str()))
    }
}

/// Parses a byte count: a decimal number with an optional binary suffix
/// (`K`, `M`, `G`, `T`, with or without `iB`).
pub fn parse_size(name: &str, text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    let shift = match suffix {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(format!("--{name}: cannot read {text:?} as a size in bytes")),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("--{name}: cannot read {text:?} as a size in bytes"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or(format!("--{name}: {text:?} is too large"))
}
