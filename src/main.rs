//! The `embedq` binary: `serve` runs the daemon, `migrate` applies the database migrations.
//! Errors at this edge are reported with `anyhow`, naming what is wrong.

use anyhow::Context;
use clap::{Parser, Subcommand};
use embedq::config::Settings;
use embedq::startup::Application;
use embedq::store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "embedq",
    version,
    about = "Keeps vector embeddings of text items in sync, off the request path"
)]
struct Cli {
    /// A TOML file layered over config/default.toml (and config/$EMBEDQ_ENV.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: admin API, intake, planner.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("embedq: {e}");
            return ExitCode::from(2);
        }
    };
    embedq::telemetry::init(settings.server.json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("embedq: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embedq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let store = Store::connect(&settings.database)
                .await
                .context("opening the database")?;
            store.migrate().await.context("applying migrations")?;
            println!("migrations applied ({})", store.backend().as_str());
            Ok(())
        }
        Command::Serve => {
            let backend = embedq::store::Backend::from_url(&settings.database.url);
            let app = Application::build(settings.clone())
                .await
                .context("starting embedq")?;
            tracing::info!(
                database = backend.as_str(),
                redis_prefix = %settings.redis.prefix,
                consumer = app.consumer_name(),
                listen = %settings.server.listen,
                port = app.port(),
                "embedq is serving"
            );
            let shutdown = app.shutdown();
            tokio::spawn(async move {
                embedq::shutdown::os_signal().await;
                tracing::info!("signal received; shutting down");
                shutdown.trigger();
            });
            app.run_until_stopped().await?;
            Ok(())
        }
    }
}
