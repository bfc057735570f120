//! Where a connection's password comes from when its connection string names none.
//!
//! The PostgreSQL client keyledger uses reads no environment, so without this module the
//! password of `serve --store`, `store copy` and `log verify --store` would have to be
//! written into the connection string, and so into a command line, where every user of
//! the machine sees it (`ps`) and shell history keeps it. This module follows the libpq
//! conventions every PostgreSQL tool follows (docs/operations.md, "High availability"):
//!
//! 1. a `password` in the connection string itself wins;
//! 2. else `PGPASSWORD`;
//! 3. else the password file, `PGPASSFILE` or `~/.pgpass`: lines
//!    `hostname:port:database:username:password`, `#` comments, `*` matching anything in
//!    the first four fields, `\` escaping `:` and `\`; the first line matching the
//!    connection's host, port, database and user gives the password. As libpq does, the
//!    file is ignored (with a warning) unless only its owner may read it (mode 0600 or
//!    stricter), since a password readable by others is no secret.
//!
//! The environment is passed in ([`Env`]), so the rules are tested without touching the
//! process's own.

use postgres::Config;
use postgres::config::Host;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Reads an environment variable (the process's own in production).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The largest password file read; a larger one is ignored with a warning.
const MAX_FILE: u64 = 1 << 20;

/// Sets `config`'s password from `PGPASSWORD` or the password file when the connection
/// string gave none. Returns why the password file was skipped, if it was (for a warning).
pub fn fill(config: &mut Config, env: Env<'_>) -> Option<String> {
    if config.get_password().is_some() {
        return None;
    }
    if let Some(password) = env("PGPASSWORD").filter(|p| !p.is_empty()) {
        config.password(password.as_encoded_bytes());
        return None;
    }
    let path = match env("PGPASSFILE") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env("HOME")?).join(".pgpass"),
    };
    let text = match read_private(&path) {
        Ok(Some(text)) => text,
        Ok(None) => return None,
        Err(why) => return Some(format!("the password file {} is ignored: {why}", path.display())),
    };
    let user = config.get_user()?.to_owned();
    let database = config.get_dbname().unwrap_or(&user).to_owned();
    let ports = config.get_ports();
    let found = config.get_hosts().iter().enumerate().find_map(|(i, host)| {
        let host = match host {
            Host::Tcp(name) => name.as_str(),
            // libpq matches a Unix-domain socket connection against `localhost`.
            Host::Unix(_) => "localhost",
        };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432).to_string();
        lookup(&text, [host, &port, &database, &user])
    });
    if let Some(password) = found {
        config.password(password);
    }
    None
}

/// The file's text if it exists and only its owner may read it; `Ok(None)` if it does
/// not exist; `Err` (why it is skipped) otherwise.
fn read_private(path: &Path) -> Result<Option<String>, String> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.to_string()),
    };
    if !metadata.is_file() {
        return Err("it is not a plain file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err("group or others may read it; its mode must be 0600 or stricter".into());
        }
    }
    if metadata.len() > MAX_FILE {
        return Err(format!("it is larger than {MAX_FILE} bytes"));
    }
    std::fs::read_to_string(path).map(Some).map_err(|e| e.to_string())
}

/// The password of the first line of a password file whose first four fields match
/// `wanted` (host, port, database, user).
fn lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    text.lines().filter(|line| !line.trim_start().starts_with('#')).find_map(|line| {
        let fields = split(line.trim_end_matches('\r'))?;
        let matches = fields[..4].iter().zip(wanted).all(|(field, value)| field == "*" || field == value);
        matches.then(|| fields[4].clone())
    })
}

/// The five fields of a line, unescaped; `None` for a line with fewer. The fifth field is
/// the rest of the line.
fn split(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let vars: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        move |name| vars.get(name).cloned()
    }

    fn password_of(url: &str, env: Env<'_>) -> (Option<String>, Option<String>) {
        let mut config: Config = url.parse().unwrap();
        let warning = fill(&mut config, env);
        (config.get_password().map(|p| String::from_utf8(p.to_vec()).unwrap()), warning)
    }

    fn private_file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        use std::os::unix::fs::PermissionsExt;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    #[test]
    fn lines_match_by_field_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    db1.example:5432:ledger:keeper:first\n\
                    *:6000:*:keeper:any\\:host\n\
                    127.0.0.1:5432:*:*:pa\\\\ss:word\n\
                    short:line\n";
        assert_eq!(lookup(text, ["db1.example", "5432", "ledger", "keeper"]).as_deref(), Some("first"));
        assert_eq!(lookup(text, ["db2.example", "6000", "x", "keeper"]).as_deref(), Some("any:host"));
        assert_eq!(lookup(text, ["127.0.0.1", "5432", "ledger", "other"]).as_deref(), Some("pa\\ss:word"));
        assert_eq!(lookup(text, ["db2.example", "5432", "ledger", "keeper"]), None);
        assert_eq!(lookup(text, ["short", "line", "", ""]), None, "a line of fewer than five fields");
    }

    #[test]
    fn the_string_wins_then_pgpassword_then_the_file() {
        let file = private_file("127.0.0.1:5433:ledger:keeper:from-file\n", 0o600);
        let passfile = file.path().to_str().unwrap();
        let url = "postgres://keeper@127.0.0.1:5433/ledger";
        let both = env_of(&[("PGPASSWORD", "from-env"), ("PGPASSFILE", passfile)]);
        assert_eq!(
            password_of("postgres://keeper:given@127.0.0.1:5433/ledger", &both).0.as_deref(),
            Some("given")
        );
        assert_eq!(password_of(url, &both).0.as_deref(), Some("from-env"));
        assert_eq!(password_of(url, &env_of(&[("PGPASSFILE", passfile)])).0.as_deref(), Some("from-file"));
        // The database defaults to the user's name; the port to 5432.
        let home = tempfile::tempdir().unwrap();
        let dot = private_file("localhost:5432:keeper:keeper:home-file\n", 0o600);
        std::fs::copy(dot.path(), home.path().join(".pgpass")).unwrap();
        let in_home = env_of(&[("HOME", home.path().to_str().unwrap())]);
        assert_eq!(password_of("host=localhost user=keeper", &in_home).0.as_deref(), Some("home-file"));
        assert_eq!(password_of("host=localhost user=other", &in_home).0, None);
        assert_eq!(password_of(url, &env_of(&[])), (None, None), "nothing anywhere: no password");
    }

    #[test]
    fn a_file_others_may_read_is_ignored_with_a_reason() {
        let file = private_file("*:*:*:*:secret\n", 0o644);
        let env = env_of(&[("PGPASSFILE", file.path().to_str().unwrap())]);
        let (password, warning) = password_of("postgres://keeper@127.0.0.1/ledger", &env);
        assert_eq!(password, None);
        let warning = warning.expect("a reason");
        assert!(warning.contains("0600"), "{warning}");
        assert!(!warning.contains("secret"), "{warning}");
        let private = private_file("*:*:*:*:secret\n", 0o400);
        let env = env_of(&[("PGPASSFILE", private.path().to_str().unwrap())]);
        assert_eq!(password_of("postgres://keeper@127.0.0.1/ledger", &env).0.as_deref(), Some("secret"));
    }
}
