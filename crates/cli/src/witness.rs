//! `keyledger witness init|serve`: run an auditor's own C2SP tlog-witness
//! (docs/witness.md). `init` creates the witness directory and its key and prints the
//! witness's vkey; `serve` answers `POST /add-checkpoint` for the logs given with `--log`.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use keyledger_verify::note::VerifierKey;
use keyledger_witness::{LogConfig, Store, Witness};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum WitnessCommand {
    /// Create a witness directory with a new Ed25519 key (mode 600) and print the witness's
    /// verifier key, `<name>+<key id>+<base64(0x04 ‖ key)>`, for verifiers to trust.
    Init {
        #[arg(long, env = "KEYLEDGER_WITNESS_DIR")]
        data_dir: PathBuf,
        /// The witness's name in its cosignatures, e.g. `witness.example.com/w1`.
        #[arg(long)]
        name: String,
    },
    /// Serve tlog-witness `POST /add-checkpoint`: cosign each log's checkpoints that extend
    /// the last one cosigned.
    Serve {
        #[arg(long, env = "KEYLEDGER_WITNESS_DIR")]
        data_dir: PathBuf,
        #[arg(long, env = "KEYLEDGER_WITNESS_LISTEN", default_value = "127.0.0.1:7380")]
        listen: SocketAddr,
        /// A log to witness: its checkpoint verifier key (`name+id+key`, or a bare base64
        /// key with `=ORIGIN`), and its origin if that is not the key's name. Repeatable.
        #[arg(long = "log", value_name = "VKEY[=ORIGIN]", required = true)]
        logs: Vec<String>,
    },
}

pub fn run(command: WitnessCommand) -> Result<ExitCode> {
    match command {
        WitnessCommand::Init { data_dir, name } => {
            let vkey = Store::init(&data_dir, &name).context("witness init refused")?;
            crate::outln!("{vkey}");
            Ok(ExitCode::SUCCESS)
        }
        WitnessCommand::Serve { data_dir, listen, logs } => serve(data_dir, listen, &logs),
    }
}

/// Parses `VKEY[=ORIGIN]`. A key name may contain `=`, and a bare key ends in `=`, so the
/// separator is the first `=` whose prefix is a whole verifier key.
fn parse_log(arg: &str) -> Result<LogConfig> {
    let config = |key: VerifierKey, origin: Option<&str>| -> Result<LogConfig> {
        let origin = match (origin, key.name()) {
            (Some(origin), _) => origin.to_owned(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => bail!("--log {arg}: a bare key needs its origin, as KEY=ORIGIN"),
        };
        Ok(LogConfig { origin, keys: vec![key] })
    };
    let whole = match arg.parse::<VerifierKey>() {
        Ok(key) => return config(key, None),
        Err(e) => e,
    };
    for (at, _) in arg.match_indices('=') {
        if let Ok(key) = arg[..at].parse::<VerifierKey>() {
            return config(key, Some(&arg[at + 1..]));
        }
    }
    bail!("--log {arg}: not VKEY[=ORIGIN]: {whole}")
}

fn serve(data_dir: PathBuf, listen: SocketAddr, logs: &[String]) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let logs = logs.iter().map(|arg| parse_log(arg)).collect::<Result<Vec<_>>>()?;
    let origins: Vec<String> = logs.iter().map(|l| l.origin.clone()).collect();
    let witness = Witness::open(&data_dir, logs).context("cannot open the witness")?;
    let vkey = witness.witness_key();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(address = %listener.local_addr()?, witness = %vkey, logs = ?origins, "the witness is serving");
        keyledger_witness::serve(listener, Arc::new(witness), crate::shutdown_signal()).await?;
        tracing::info!("stopped cleanly");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_log;

    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

    #[test]
    fn log_arguments() {
        let named = parse_log(VKEY).unwrap();
        assert_eq!(named.origin, "PeterNeumann");
        assert_eq!(named.keys[0].to_string(), VKEY);
        assert_eq!(parse_log(&format!("{VKEY}=log.example/a")).unwrap().origin, "log.example/a");
        assert_eq!(parse_log(&format!("{VKEY}=a=b")).unwrap().origin, "a=b");
        // The same key bare (its base64 ends in '='): the origin is required.
        let bare = "GlzZBxQ8OExB6DDFvOEqqIF+xWSaqr8sMTiLNbLXRNY=";
        let log = parse_log(&format!("{bare}=log.example/b")).unwrap();
        assert_eq!(log.origin, "log.example/b");
        assert_eq!(log.keys[0].public_key(), named.keys[0].public_key());
        assert!(parse_log(bare).is_err());
        assert!(parse_log("nonsense").is_err());
        assert!(parse_log("nonsense=origin").is_err());
    }
}
