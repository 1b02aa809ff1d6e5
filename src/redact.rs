//! Hiding credentials in text shown to people: log lines, error messages,
//! `tilepipe status` output.
//!
//! Database URLs and conninfo strings (`postgresql://user:secret@host/db`,
//! `host=h password=secret`) and feed URLs (`https://user:secret@host/`,
//! `?token=...`) are kept whole where they are used and passed through
//! [`secrets`] wherever they are formatted. Logging goes through
//! [`RedactingStderr`] as well, a net for any message that formats one
//! directly.

use std::borrow::Cow;
use std::io::Write;

/// What replaces a hidden value.
pub const MASK: &str = "***";

/// Names whose `name=value` is hidden: libpq's `password` (conninfo and URL
/// query), and the query parameters feeds and proxies use for tokens.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "auth",
    "sig",
    "signature",
];

/// `text` with the password of every `scheme://user:password@` and the value
/// of every `password=`, `token=` (and the like) replaced by `***`. User and
/// host names stay, so messages still say where.
pub fn secrets(text: &str) -> Cow<'_, str> {
    if !text.contains("://") && !text.contains('=') {
        return Cow::Borrowed(text);
    }
    let hidden = hide_key_values(&hide_url_passwords(text));
    if hidden == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(hidden)
    }
}

/// Ends an URL's authority (or a value) inside running text.
fn ends_authority(c: char) -> bool {
    c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`')
}

fn hide_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after.find(ends_authority).unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                let userinfo = &authority[..userinfo_end];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn hide_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (before, after) = rest.split_at(eq + 1);
        out.push_str(before);
        rest = after;
        let name_start = before[..eq]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &before[name_start..eq];
        if !SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            continue;
        }
        // libpq conninfo values may be quoted, with \' and \\ escapes.
        let value_end = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut escaped = false;
            let close = quoted.char_indices().find(|&(_, c)| {
                let end = !escaped && c == '\'';
                escaped = !escaped && c == '\\';
                end
            });
            close.map_or(rest.len(), |(i, _)| i + 2)
        } else {
            rest.find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | ',' | ')' | ';'))
                .unwrap_or(rest.len())
        };
        if value_end > 0 {
            out.push_str(MASK);
        }
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

/// Standard error for the log, with [`secrets`] applied to every write
/// (tracing's formatter writes one whole event per call).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(secrets(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingStderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords_and_tokens_but_keeps_where() {
        let cases = [
            (
                "postgres://user:secret@db.example:5432/gis",
                "postgres://user:***@db.example:5432/gis",
            ),
            (
                "cannot reach https://osm:p%40ss@feed.example/minute/state.txt: refused",
                "cannot reach https://osm:***@feed.example/minute/state.txt: refused",
            ),
            (
                "error sending request for url (http://a:b@127.0.0.1:9/x)",
                "error sending request for url (http://a:***@127.0.0.1:9/x)",
            ),
            (
                "host=/tmp password=secret dbname=gis",
                "host=/tmp password=*** dbname=gis",
            ),
            (
                "host=h password='se cr\\'et' user=u",
                "host=h password=*** user=u",
            ),
            (
                "postgresql:///gis?host=/tmp&password=secret&user=u",
                "postgresql:///gis?host=/tmp&password=***&user=u",
            ),
            (
                "https://feed.example/minute/?token=abc123&x=1",
                "https://feed.example/minute/?token=***&x=1",
            ),
            ("PASSWORD=x", "PASSWORD=***"),
        ];
        for (text, expected) in cases {
            assert_eq!(secrets(text), expected, "{text}");
        }
        for unchanged in [
            "postgres://user@host/db",
            "https://planet.openstreetmap.org/replication/minute/",
            "max_zoom=18 user@example.org",
            "",
        ] {
            assert!(
                matches!(secrets(unchanged), Cow::Borrowed(_)),
                "{unchanged}"
            );
        }
    }
}
