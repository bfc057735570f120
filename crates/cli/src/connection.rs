//! What the admin commands of a running server share (`keys`, `policy`, `webhook`, `log`,
//! `audit`): how to reach the server and authenticate ([`Connection`], the same flags and
//! environment variables everywhere), how an answer reaches stdout ([`emit`],
//! [`emit_json`]), and how a failure ends the command ([`finish`], also `export create`'s).
//!
//! The admin key is read from `--admin-key` or `KEYLEDGER_ADMIN_KEY`; clap never shows the
//! environment variable's value (`hide_env_values`), and [`Client`] keeps it out of its
//! `Debug` output and errors.

use crate::client::{Client, ClientError};
use clap::Args;
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

/// The first error writing an answer to stdout, other than a closed pipe (`| head`, which
/// is the reader's choice): a command whose answer could not be written (a full disk, a
/// closed terminal), perhaps a secret shown only once, must not exit 0 ([`finish`]).
static OUTPUT_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// How to reach the server; accepted before or after the subcommand.
#[derive(Args, Clone)]
pub struct Connection {
    /// Base URL of the keyledger server.
    #[arg(long, env = "KEYLEDGER_URL", default_value = "http://127.0.0.1:7878", global = true)]
    pub(crate) url: String,
    /// Admin key (a key of workspace `_ledger` with the scopes the command needs). Prefer the
    /// environment variable: a command-line argument is visible to other users of the machine.
    #[arg(long, env = "KEYLEDGER_ADMIN_KEY", hide_env_values = true, global = true, value_name = "KEY")]
    pub(crate) admin_key: Option<String>,
    /// Print the server's JSON instead of a human view.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Connection {
    /// A client of the server, or a usage error if the URL or the admin key is unusable.
    pub(crate) fn client(&self) -> Result<Client, ClientError> {
        Client::new(&self.url, self.admin_key.as_deref().unwrap_or(""))
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic, any other
/// failure is remembered for [`finish`].
pub(crate) fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush())
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        let mut first = OUTPUT_ERROR.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| error.to_string());
    }
}

/// [`emit`] with `format!`'s arguments and a newline: how every command prints to stdout,
/// so that a write that fails is reported at exit instead of panicking as `println!` does.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::connection::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// The first failure to write an answer to stdout since the last call (a closed pipe
/// excepted; see [`emit`]), taken.
pub(crate) fn take_output_error() -> Option<String> {
    OUTPUT_ERROR.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Writes `line` and a newline to stdout, or the error (a closed pipe included): for an
/// answer that must reach its reader, such as the first admin key of `init`.
pub(crate) fn print_required(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush())
}

/// Writes `value` as pretty JSON and a newline to stdout (see [`emit`]).
pub(crate) fn emit_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    emit(&format!("{text}\n"));
}

/// The exit of a command: 0, or `keyledger: <code>: <message>` on stderr and the error
/// class's exit code (see [`crate::client::exit`]).
pub(crate) fn finish(result: Result<(), ClientError>) -> ExitCode {
    let output_error = take_output_error();
    match result {
        Ok(()) => match output_error {
            None => ExitCode::SUCCESS,
            Some(error) => {
                eprintln!(
                    "keyledger: the answer could not be written to standard output ({error}); what the server did stands, and a secret the answer held cannot be shown again"
                );
                ExitCode::from(crate::client::exit::OUTPUT)
            }
        },
        Err(error) => {
            eprintln!("keyledger: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Asks `question` on the terminal and goes on only if the typed answer is `expected`.
/// Without a terminal it refuses: the command's `--yes` is how a script confirms. `action`
/// names what is refused (`revoke every key of `acme``) in both refusals.
pub(crate) fn confirm(question: &str, expected: &str, action: &str) -> Result<(), ClientError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(ClientError::Usage(format!(
            "refusing to {action} without confirmation: stdin is not a terminal, pass --yes"
        )));
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| ClientError::Usage(format!("cannot read the confirmation: {e}")))?;
    if answer.trim() == expected {
        Ok(())
    } else {
        Err(ClientError::Usage(format!(
            "the confirmation did not match; nothing was done (did not {action})"
        )))
    }
}
