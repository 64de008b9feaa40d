//! The loader file names PXE ROMs are handed: `[dhcp] bios_loader`,
//! `efi_loader`, `arm32_loader`, `arm64_loader` over pxed's defaults, and each
//! rule's `loader` (which the rule carries). Each is kept with where it is set, so that `pxed check`
//! (`src/check.rs`) can name the setting when the file cannot be served.

use toml::Spanned;

use super::{wire, Loader};
use crate::core::decide::Loaders;
use crate::core::Location;

/// One loader file name as the config sets it (or pxed's default for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderSetting {
    /// `[dhcp] efi_loader`, `rule "rescue" loader`, …
    pub key: String,
    pub file: String,
    /// Where it is written; `None` when it is pxed's default.
    pub at: Option<Location>,
}

impl Loader<'_> {
    /// `bios_loader`, `efi_loader`, `arm32_loader`, `arm64_loader` over the
    /// defaults, and one setting for each (set or default).
    pub(super) fn loaders(&mut self, w: &wire::Dhcp) -> (Loaders, Vec<LoaderSetting>) {
        let mut loaders = Loaders::default();
        let mut settings = Vec::new();
        for (field, slot, key) in [
            (&w.bios_loader, &mut loaders.bios, "bios_loader"),
            (&w.efi_loader, &mut loaders.efi, "efi_loader"),
            (&w.arm32_loader, &mut loaders.arm32, "arm32_loader"),
            (&w.arm64_loader, &mut loaders.arm64, "arm64_loader"),
        ] {
            let at = field.as_ref().filter(|v| self.loader_name(v)).map(|v| {
                *slot = v.get_ref().clone();
                self.location(v.span().start)
            });
            settings.push(LoaderSetting {
                key: format!("[dhcp] {key}"),
                file: slot.clone(),
                at,
            });
        }
        (loaders, settings)
    }

    /// A rule's `loader`, validated, and its setting.
    pub(super) fn rule_loader(&mut self, s: &wire::Section) -> Option<(String, LoaderSetting)> {
        let (Some(name), Some(l)) = (&s.name, &s.loader) else {
            return None;
        };
        if !self.loader_name(l) {
            return None;
        }
        let setting = LoaderSetting {
            key: format!("rule {:?} loader", name.get_ref()),
            file: l.get_ref().clone(),
            at: Some(self.location(l.span().start)),
        };
        Some((l.get_ref().clone(), setting))
    }

    /// A loader is a file name under the asset roots (or an absolute URL).
    fn loader_name(&mut self, v: &Spanned<String>) -> bool {
        let s = v.get_ref();
        let ok = !s.is_empty()
            && s.len() <= 127
            && !s.split('/').any(|p| p == "..")
            && s.is_ascii()
            && !s.chars().any(|c| c.is_ascii_control() || c == ' ');
        if !ok {
            self.error(v, format!("loader {s:?}: a file name under the asset roots, at most 127 ASCII characters, no spaces or '..'"));
        }
        ok
    }
}
