//! `boot-templates/`: reading the template files, compiling them, and
//! rendering every rule once with a sample machine so that a template error
//! is a config error, not a failed boot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{ConfigError, ConfigErrors, Loader};
use crate::core::render::{self, Base, TemplateError};
use crate::core::{Arch, BootKind, ClientString, Identity, Location, Mac, Policy, Templates};

/// One template file as read from disk: its name (what rules refer to), its
/// path (for error messages) and its text.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// Where a config's templates come from.
#[derive(Debug, Clone, Copy)]
pub enum TemplateFiles<'a> {
    /// Read from the directory `templates_dir` names (what the daemon does).
    Directory,
    /// Already read (see [`read_templates`]), whatever `templates_dir` says:
    /// the fuzz target validates thousands of configs a second against the
    /// shipped templates without touching the disk.
    Given(&'a [TemplateFile]),
}

/// Reads every template file in `dir` (editor swap and backup files skipped).
pub fn read_templates(dir: &Path) -> Result<Vec<TemplateFile>, ConfigErrors> {
    let mut loader = Loader {
        file: dir.display().to_string().into(),
        text: "",
        errors: Vec::new(),
        asset_refs: Vec::new(),
    };
    match loader.read_templates(dir) {
        Some(files) if loader.errors.is_empty() => Ok(files),
        _ => Err(ConfigErrors(loader.errors)),
    }
}

impl Loader<'_> {
    /// The template files in `dir`; what cannot be read is an error. `None`
    /// when the directory itself cannot be read.
    pub(super) fn read_templates(&mut self, dir: &Path) -> Option<Vec<TemplateFile>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(ConfigError {
                    location: Location {
                        file: dir.display().to_string().into(),
                        line: 1,
                        column: 1,
                    },
                    reason: format!("cannot read the template directory: {e}"),
                });
                return None;
            }
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            // Editors leave swap and backup files beside the real ones.
            if name.starts_with('.')
                || name.ends_with('~')
                || name.ends_with(".swp")
                || !entry.path().is_file()
            {
                continue;
            }
            match std::fs::read_to_string(entry.path()) {
                Ok(text) => files.push(TemplateFile {
                    name,
                    path: entry.path(),
                    text,
                }),
                Err(e) => self.errors.push(ConfigError {
                    location: Location {
                        file: entry.path().display().to_string().into(),
                        line: 1,
                        column: 1,
                    },
                    reason: format!("cannot read: {e}"),
                }),
            }
        }
        Some(files)
    }

    /// Compiles the template files; `dir` names missing required ones.
    pub(super) fn templates(
        &mut self,
        dir: &Path,
        files: &[TemplateFile],
    ) -> (Option<Templates>, Vec<PathBuf>) {
        let sources: BTreeMap<&str, &TemplateFile> =
            files.iter().map(|f| (f.name.as_str(), f)).collect();
        for required in render::REQUIRED {
            if !sources.contains_key(*required) {
                self.errors.push(ConfigError {
                    location: Location { file: dir.join(required).display().to_string().into(), line: 1, column: 1 },
                    reason: "missing: pxed needs this template (copy it from the shipped boot-templates/)".into(),
                });
            }
        }
        let paths: Vec<(&str, String, &str)> = sources
            .values()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.path.display().to_string(),
                    f.text.as_str(),
                )
            })
            .collect();
        let files = sources.values().map(|f| f.path.clone()).collect();
        match Templates::compile(paths.iter().map(|(n, p, t)| (*n, p.as_str(), *t))) {
            Ok(t) => (Some(t), files),
            Err(errs) => {
                self.errors.extend(errs.into_iter().map(|e| ConfigError {
                    location: e.location,
                    reason: e.reason,
                }));
                (None, files)
            }
        }
    }

    /// Renders the bootstrap, the retry script and every rule's templates once
    /// with a sample machine, so that an undefined variable or a failing helper
    /// is caught now and not when a machine boots.
    pub(super) fn render_everything(&mut self, policy: &Policy) {
        let base = Base::Http("http://pxed.example:8080".into());
        if let Err(e) = policy.check_fixed_templates(&base) {
            self.errors.push(ConfigError {
                location: e.location,
                reason: e.reason,
            });
        }
        let sample = |arch| Identity {
            mac: Some(Mac([0x52, 0x54, 0x00, 0x00, 0x00, 0x01])),
            product: ClientString::new("sample product"),
            serial: ClientString::new("sample serial"),
            manufacturer: ClientString::new("sample vendor"),
            uuid: "00000000-0000-0000-0000-000000000001".parse().ok(),
            arch: Some(arch),
        };
        // As a one-shot override would render it, so that a template using
        // `install.callback_url` is checked with a value.
        let install = crate::core::lifecycle::Install {
            callback_url: Some(crate::core::lifecycle::callback_url(
                &base,
                Mac([0x52, 0x54, 0x00, 0x00, 0x00, 0x01]),
                "00000000000000000000000000000000",
            )),
            config_url: Some("http://pxed.example:8080/config/52-54-00-00-00-01/rule/".into()),
        };
        for rule in policy.rules.iter() {
            let mut templates = vec![(
                rule.boot.ipxe_template(Some(Arch::Bios)).to_string(),
                Arch::Bios,
            )];
            templates.push((
                rule.boot.ipxe_template(Some(Arch::EfiX64)).to_string(),
                Arch::EfiX64,
            ));
            if rule.boot.kind == BootKind::Pxelinux {
                templates.push((rule.boot.menu_template.clone(), Arch::Bios));
            }
            templates.dedup_by(|a, b| a.0 == b.0);
            if rule.boot.kind == BootKind::Grub {
                // Both CPUs: the serial console commands differ.
                for arch in [Arch::EfiX64, Arch::EfiArm64] {
                    templates.push((rule.boot.grub_template.clone(), arch));
                }
            }
            // A template that does not exist is already an error at the
            // rule's `template` key: rendering it would only add a bogus one.
            templates.retain(|(t, _)| policy.templates.has(t));
            let mut results: Vec<Result<String, TemplateError>> = templates
                .iter()
                .map(|(t, arch)| {
                    policy.render_rule_checked(rule, t, &sample(*arch), &base, &install)
                })
                .collect();
            // Every installer config too, Ignition checked as JSON.
            results.extend(rule.boot.configs.keys().filter_map(|kind| {
                policy.installer_config(rule, *kind, &sample(Arch::Bios), &base, &install)
            }));
            for e in results.into_iter().filter_map(Result::err) {
                // One broken template fails every rule using it: say it once.
                if self.errors.iter().any(|known| known.location == e.location) {
                    continue;
                }
                self.errors.push(ConfigError {
                    location: e.location,
                    reason: format!(
                        "{} (rendering rule {:?} at {})",
                        e.reason, rule.name, rule.location
                    ),
                });
            }
        }
    }
}
