//! Where a machine reaches pxed's HTTP server, which decides how URLs in a
//! script are written.

use std::net::SocketAddr;

/// Where the machine reaches pxed, which decides how URLs in a script are
/// written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Base {
    /// `http://host[:port]`, validated: only host characters, so it can sit in a
    /// script unquoted.
    Http(String),
    /// A classic pxelinux client over TFTP: paths relative to the TFTP root.
    Tftp,
}

impl Base {
    /// From an HTTP `Host` header or a configured URL authority. `None` if it
    /// holds anything but host and port characters.
    pub fn from_authority(authority: &str) -> Option<Base> {
        let ok = !authority.is_empty()
            && authority.len() <= 255
            && authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
        ok.then(|| Base::Http(format!("http://{authority}")))
    }

    /// From a configured `public_url` such as `http://10.0.0.1:8080` (a path
    /// prefix is allowed).
    pub fn from_url(url: &str) -> Option<Base> {
        let rest = url.strip_prefix("http://")?.trim_end_matches('/');
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path_ok = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c));
        match Base::from_authority(authority) {
            Some(Base::Http(a)) if path_ok && path.is_empty() => Some(Base::Http(a)),
            Some(Base::Http(a)) if path_ok => Some(Base::Http(format!("{a}/{path}"))),
            _ => None,
        }
    }

    pub fn from_addr(addr: SocketAddr) -> Base {
        Base::Http(format!("http://{addr}"))
    }

    pub fn url(&self) -> &str {
        match self {
            Base::Http(u) => u,
            Base::Tftp => "",
        }
    }

    /// The URL (or TFTP path) of a file under the asset roots. Absolute URLs in
    /// the config are kept as they are.
    pub fn asset(&self, path: &str) -> String {
        if path.contains("://") {
            return path.to_string();
        }
        let path = path.trim_start_matches('/');
        match self {
            Base::Http(u) => format!("{u}/assets/{path}"),
            Base::Tftp => path.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn base_rejects_anything_but_host_characters() {
        assert_eq!(
            Base::from_authority("10.0.0.1:8080"),
            Some(Base::Http("http://10.0.0.1:8080".into()))
        );
        assert_eq!(
            Base::from_authority("[::1]:80")
                .map(|b| b.url().to_string())
                .as_deref(),
            Some("http://[::1]:80")
        );
        for bad in ["", "a b", "x\nchain", "h/p", "h${x}", "h;y"] {
            assert_eq!(Base::from_authority(bad), None, "{bad:?}");
        }
        assert_eq!(
            Base::from_url("http://pxe.example:8080/boot/"),
            Some(Base::Http("http://pxe.example:8080/boot".into()))
        );
        assert_eq!(Base::from_url("https://x"), None);
        assert_eq!(Base::from_url("http://x/a b"), None);
    }

    #[test]
    fn asset_urls() {
        let b = Base::Http("http://h:1".into());
        assert_eq!(
            b.asset("debian/vmlinuz"),
            "http://h:1/assets/debian/vmlinuz"
        );
        assert_eq!(b.asset("http://other/k"), "http://other/k");
        assert_eq!(Base::Tftp.asset("/debian/vmlinuz"), "debian/vmlinuz");
    }
}
