//! The ingest API's address, parsed once from the base URL: `https://`
//! and `http://` for HTTP, `mqtts://` and `mqtt://` for MQTT.

use crate::error::Error;

/// The path readings are posted to, below the base URL.
pub const READINGS_PATH: &str = "/v1/readings";

/// A parsed base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) tls: bool,
    /// An `mqtts://` or `mqtt://` URL: readings go out as MQTT PUBLISHes.
    pub(crate) mqtt: bool,
    /// Host name or IP literal (without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The request target: prefix + [`READINGS_PATH`].
    pub(crate) path: String,
    /// The `Host` header value.
    pub(crate) authority: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, Error> {
        let bad = |why: &str| Error::Config(format!("URL `{url}`: {why}"));
        let (tls, mqtt, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, false, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, true, r)
        } else {
            return Err(bad(
                "must start with https://, http://, mqtts:// or mqtt://",
            ));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') || prefix.contains(['?', '#']) {
            return Err(bad("user info, query and fragment are not supported"));
        }
        if mqtt && !prefix.is_empty() {
            return Err(bad(
                "an MQTT URL has no path (the topic is readings/<device id>)",
            ));
        }
        let default_port = match (mqtt, tls) {
            (false, true) => 443,
            (false, false) => 80,
            (true, true) => 8883,
            (true, false) => 1883,
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ]")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            tls,
            mqtt,
            host,
            port,
            path: format!("{prefix}{READINGS_PATH}"),
            authority: authority.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("https://ingest.example:8443/api/").unwrap();
        assert_eq!(
            (
                e.tls,
                e.host.as_str(),
                e.port,
                e.path.as_str(),
                e.authority.as_str()
            ),
            (
                true,
                "ingest.example",
                8443,
                "/api/v1/readings",
                "ingest.example:8443"
            )
        );
        let e = Endpoint::parse("http://[::1]:80").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "::1", 80));
        assert_eq!(Endpoint::parse("https://h").unwrap().port, 443);
        let e = Endpoint::parse("mqtts://h").unwrap();
        assert_eq!((e.tls, e.mqtt, e.port), (true, true, 8883));
        let e = Endpoint::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((e.tls, e.mqtt, e.port), (false, true, 1884));
        for bad in [
            "ftp://h",
            "https://",
            "https://h:x",
            "https://u@h",
            "https://h/?q",
            "https://[::1",
            "mqtts://h/prefix",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
