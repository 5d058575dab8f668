//! Secrets out of printed configuration: connection URLs keep their shape
//! (scheme, user, host, database) and lose their passwords, so a `Debug`
//! print or a log line can never leak one.

/// `url` with any password replaced by `***`: the `user:password@` part of
/// a URL (`amqp://u:p@h/`, `postgres://u:p@h/db`) and `password=...` in a
/// key-value connection string (`host=h password=p`) or a query string.
pub fn url(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            // The authority ends at the first `/`, `?` or `#`; the userinfo
            // at its last `@`.
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    let hidden = if userinfo.contains(':') { ":***" } else { "" };
                    format!("{scheme}://{user}{hidden}@{host}{tail}")
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    // password=... in query strings and key-value strings.
    let lower = out.to_ascii_lowercase();
    if let Some(i) = lower.find("password=") {
        let start = i + "password=".len();
        let end = out[start..]
            .find(['&', ' ', ';'])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        for (given, shown) in [
            (
                "amqp://ingest:s3cret@rabbit:5672/%2f",
                "amqp://ingest:***@rabbit:5672/%2f",
            ),
            ("amqps://u:p@a:b@host:5671/", "amqps://u:***@host:5671/"),
            (
                "postgres://ha_writer:pw@db/ha?sslmode=verify-full",
                "postgres://ha_writer:***@db/ha?sslmode=verify-full",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            (
                "host=db user=u password=pw dbname=ha",
                "host=db user=u password=*** dbname=ha",
            ),
            (
                "postgres://db/ha?user=u&password=pw&sslmode=require",
                "postgres://db/ha?user=u&password=***&sslmode=require",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
    }
}
