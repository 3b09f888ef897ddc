//! Keep credentials out of every message the sink produces.
//!
//! object_store already hides URLs that carry a SAS token, but server error
//! bodies and nested sources can still echo request details. Every message
//! that leaves this crate goes through [`Scrubber::scrub`], which removes:
//! - each configured secret (access key, SAS token and its parts), verbatim
//!   and percent-encoded;
//! - `sig=…` (Azure SAS) and `X-Amz-Signature=…` / `X-Amz-Credential=…` /
//!   `X-Amz-Security-Token=…` (S3 presigned URLs) query parameters;
//! - the signature of a `SharedKey account:signature` header and the
//!   64-hex-digit `Signature=…` of an AWS SigV4 `Authorization` header;
//! - any long base64 run ending in `=` (HMAC-SHA256 signatures and account
//!   keys both look like that), in case a server quotes one back.

use std::fmt;

const REDACTED: &str = "<redacted>";

/// Removes known secrets and signature-shaped text from messages.
#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}

impl Scrubber {
    /// Remember a secret; short or empty values are ignored (they would
    /// redact ordinary words).
    pub fn add(&mut self, secret: &str) {
        let secret = secret.trim();
        if secret.len() < 6 {
            return;
        }
        let mut forms = vec![secret.to_string(), percent_encode(secret)];
        // A SAS token's parts can show up separately, `sig` above all.
        if secret.contains('=') {
            for pair in secret.trim_start_matches('?').split('&') {
                if let Some((_, value)) = pair.split_once('=')
                    && value.len() >= 6
                {
                    forms.push(value.to_string());
                    forms.push(percent_encode(value));
                    forms.push(percent_decode(value));
                }
            }
        }
        for form in forms {
            if form.len() >= 6 && !self.secrets.contains(&form) {
                self.secrets.push(form);
            }
        }
        // Longest first, so a secret is not half-replaced by one of its parts.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// The message with every secret and signature removed.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        let mut out = redact_query_param(&out, "sig=");
        for name in [
            "x-amz-signature=",
            "x-amz-credential=",
            "x-amz-security-token=",
        ] {
            out = redact_query_param(&out, name);
        }
        let out = redact_shared_key(&out);
        let out = redact_sigv4_signature(&out);
        redact_base64_runs(&out)
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_value_end(c: char) -> bool {
    c == '&' || c == '"' || c == '\'' || c == '<' || c == '>' || c.is_whitespace()
}

/// `…sig=abc%2B&se=…` → `…sig=<redacted>&se=…` (case-insensitive name).
fn redact_query_param(text: &str, name: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find(name) {
        let start = pos + found;
        // Only a real parameter: at the start or after `?`, `&`, `;` or space.
        let ok_before = start == 0
            || matches!(
                text[..start].chars().next_back(),
                Some('?' | '&' | ';' | ' ' | '\'')
            );
        let value_start = start + name.len();
        out.push_str(&text[pos..value_start]);
        if ok_before {
            let value_len = text[value_start..]
                .find(is_value_end)
                .unwrap_or(text.len() - value_start);
            if value_len > 0 {
                out.push_str(REDACTED);
            }
            pos = value_start + value_len;
        } else {
            pos = value_start;
        }
    }
    out.push_str(&text[pos..]);
    out
}

/// `SharedKey devstoreaccount1:SiGnAtUrE=` → `SharedKey devstoreaccount1:<redacted>`.
fn redact_shared_key(text: &str) -> String {
    let marker = "SharedKey ";
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = text[pos..].find(marker) {
        let start = pos + found + marker.len();
        out.push_str(&text[pos..start]);
        let rest = &text[start..];
        let end = rest.find(is_value_end).unwrap_or(rest.len());
        match rest[..end].split_once(':') {
            Some((account, _)) => {
                out.push_str(account);
                out.push(':');
                out.push_str(REDACTED);
            }
            None => out.push_str(&rest[..end]),
        }
        pos = start + end;
    }
    out.push_str(&text[pos..]);
    out
}

/// `Signature=<64 hex digits>` (SigV4) → `Signature=<redacted>`.
fn redact_sigv4_signature(text: &str) -> String {
    let marker = "Signature=";
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = text[pos..].find(marker) {
        let start = pos + found + marker.len();
        out.push_str(&text[pos..start]);
        let hex = text[start..]
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .count();
        if hex == 64 {
            out.push_str(REDACTED);
            pos = start + hex;
        } else {
            pos = start;
        }
    }
    out.push_str(&text[pos..]);
    out
}

/// Replace base64 runs of 40+ characters that end in `=` (signatures, keys).
fn redact_base64_runs(text: &str) -> String {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if is_b64(chars[i]) {
            let start = i;
            while i < chars.len() && is_b64(chars[i]) {
                i += 1;
            }
            let body = i - start;
            let mut pad = 0;
            while i < chars.len() && chars[i] == '=' && pad < 2 {
                i += 1;
                pad += 1;
            }
            if body >= 40 && pad > 0 {
                out.push_str(REDACTED);
            } else {
                out.extend(&chars[start..i]);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn removes_configured_secrets_in_every_form() {
        let mut s = Scrubber::default();
        s.add(KEY);
        s.add("?sv=2024-01-01&ss=b&sig=AbC%2Bdef%2F123xyz&se=2030");
        let msg = format!(
            "key {KEY} enc {} sig AbC+def/123xyz raw AbC%2Bdef%2F123xyz",
            percent_encode(KEY)
        );
        let out = s.scrub(&msg);
        assert!(!out.contains("Eby8vdM02"), "{out}");
        assert!(!out.contains("AbC"), "{out}");
        assert!(out.contains("<redacted>"));
    }

    #[test]
    fn removes_signatures_it_was_not_told_about() {
        let s = Scrubber::default();
        let out = s.scrub(
            "GET https://a.blob.core.windows.net/c/x?sv=1&sig=ZZZZsecret%3D&se=2 failed; \
             Authorization: SharedKey acct:q1w2e3r4t5y6u7i8o9p0q1w2e3r4t5y6u7i8o9p0abc= \
             found 'zxcvbnmasdfghjklqwertyuiop1234567890ZXCVBNMa='",
        );
        assert!(!out.contains("ZZZZsecret"), "{out}");
        assert!(!out.contains("q1w2e3"), "{out}");
        assert!(!out.contains("zxcvbnm"), "{out}");
        assert!(out.contains("sv=1&sig=<redacted>&se=2"), "{out}");
        assert!(out.contains("SharedKey acct:<redacted>"), "{out}");

        let hex = "0123456789abcdef".repeat(4);
        let out = s.scrub(&format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIAX/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature={hex} url ?X-Amz-Signature={hex}&X-Amz-Security-Token=TOKENxyz123&a=1"
        ));
        assert!(!out.contains(&hex), "{out}");
        assert!(!out.contains("TOKENxyz123"), "{out}");
        assert!(out.contains("Signature=<redacted>"), "{out}");
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let s = Scrubber::default();
        let msg = "Object at location sqlite/2026-01-01/app-120000.db.zst not found: signature=ok design=x";
        assert_eq!(s.scrub(msg), msg);
    }
}
