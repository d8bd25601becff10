//! The server URL a console connects to, normalised so one server has one keyring account, and
//! refused when unsafe: plain http only to this machine, no credentials or query in the URL.

use std::net::IpAddr;

use url::{Host, Url};

use crate::error::CommandError;

/// The server URL as the keyring account: `https://host[:port][/prefix]`, without a trailing
/// slash, so one server has one token however its URL was typed. Plain `http` only to this
/// machine: a token must not cross the network in clear text.
pub fn normalize_server_url(typed: &str) -> Result<String, CommandError> {
    let invalid = |why: &str| CommandError::InvalidServerUrl(why.to_string());
    let typed = typed.trim();
    if typed.is_empty() {
        return Err(invalid(
            "enter the server URL, for example https://settle.example.com:8443",
        ));
    }
    let url = Url::parse(typed).map_err(|error| {
        CommandError::InvalidServerUrl(format!(
            "{typed:?} is not a URL ({error}); write it as https://host:port"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid("the server URL starts with https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "the server URL must not carry a user name or password: the token goes in its own field",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the server URL has no query (?…) or fragment (#…)"));
    }
    let host = url
        .host()
        .ok_or_else(|| invalid("the server URL names no host"))?;
    if url.scheme() == "http" && !is_loopback(&host) {
        return Err(invalid(
            "use https:// for another machine (plain http:// only for localhost): the token must not travel in clear text",
        ));
    }
    Ok(format!(
        "{}{}",
        url.origin().ascii_serialization(),
        url.path().trim_end_matches('/')
    ))
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(address) => IpAddr::V4(*address).is_loopback(),
        Host::Ipv6(address) => IpAddr::V6(*address).is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_normalised_to_one_account_per_server() {
        for (typed, account) in [
            (
                " https://Settle.Example.com:8443/ ",
                "https://settle.example.com:8443",
            ),
            (
                "https://settle.example.com:443",
                "https://settle.example.com",
            ),
            (
                "https://proxy.example.com/settle/",
                "https://proxy.example.com/settle",
            ),
            ("http://localhost:8080", "http://localhost:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(normalize_server_url(typed).unwrap(), account, "{typed}");
        }
    }

    #[test]
    fn unsafe_or_malformed_server_urls_are_refused_with_a_reason() {
        for (typed, reason) in [
            ("", "enter the server URL"),
            ("settle.example.com", "not a URL"),
            ("ftp://settle.example.com", "starts with https://"),
            (
                "https://admin:pw@settle.example.com",
                "user name or password",
            ),
            ("https://settle.example.com/?token=x", "no query"),
            (
                "http://settle.example.com",
                "plain http:// only for localhost",
            ),
            ("http://10.0.0.5:8080", "plain http:// only for localhost"),
        ] {
            let message = normalize_server_url(typed).unwrap_err().to_string();
            assert!(message.contains(reason), "{typed:?}: {message}");
        }
    }
}
