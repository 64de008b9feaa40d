//! `pxed check`: load the config (every error at once), then every check of
//! `pxed::check`; exit 1 if anything is an error.

use std::path::Path;

use pxed::check::Severity;

use super::Outcome;

pub fn run(path: &Path) -> anyhow::Result<Outcome> {
    super::config_exists(path)?;
    let config = match pxed::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {}", path.display(), errors_count(errors.0.len()));
            return Ok(Outcome::Failed);
        }
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    let findings = pxed::check::run(&config);
    for f in &findings {
        eprintln!("{f}");
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if errors > 0 {
        eprintln!("{}: {}", path.display(), errors_count(errors));
        return Ok(Outcome::Failed);
    }
    println!(
        "{}: ok, {} rules, {} files",
        path.display(),
        config.policy.rules.len(),
        config.files.len()
    );
    Ok(Outcome::Ok)
}

fn errors_count(n: usize) -> String {
    match n {
        1 => "1 error".to_string(),
        n => format!("{n} errors"),
    }
}
