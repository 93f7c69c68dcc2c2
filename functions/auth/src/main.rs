//! `auth` — serve the auth function, run migrations, or add a user.

use std::io::BufRead;

use auth::{AppState, Settings, password, users};
use clap::{Parser, Subcommand};
use vidmp3_runtime::config::{Env, or_exit};
use vidmp3_runtime::{serve, telemetry};

#[derive(Parser)]
#[command(
    name = "auth",
    about = "vidmp3 auth function: users in MySQL, JWT login and validation"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on $PORT (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from $AUTH_NEW_PASSWORD, else from the first line of stdin.
    Add {
        /// The user's email.
        #[arg(long)]
        email: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Succeed without changes when the email exists already.
        #[arg(long)]
        exists_ok: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    let env = Env::process();
    let command = cli.command.unwrap_or(Command::Serve);
    let Command::Serve = command else {
        // The CLI needs the database only: no JWT_SECRET for `migrate` or `user add`.
        let database_url = or_exit(vidmp3_runtime::config::mysql_url(&env, "DATABASE_URL"));
        let timeout = or_exit(env.seconds("DB_CONNECT_TIMEOUT_SECONDS", 5));
        let pool = vidmp3_runtime::db::mysql_pool(&database_url, timeout)?;
        return run_cli(command, &pool).await;
    };
    let settings = or_exit(Settings::from_env(&env));
    let state = AppState::new(&settings)?;
    let pool = state.pool.clone();
    // Migrations run in the background so a cold start answers at once; they retry until MySQL answers.
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(500);
        loop {
            match users::migrate(&pool).await {
                Ok(()) => break tracing::info!("migrations applied"),
                Err(e) => {
                    tracing::warn!(error = %e, "migrations not applied yet; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(30));
        }
    });
    tokio::task::spawn_blocking(password::warm_up);
    serve::serve(auth::router(state)).await
}

async fn run_cli(command: Command, pool: &sqlx::MySqlPool) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            users::migrate(pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Add {
                    email,
                    admin,
                    exists_ok,
                },
        } => {
            let email = users::Email::parse(&email).map_err(anyhow::Error::msg)?;
            let password = match std::env::var("AUTH_NEW_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            password::check_new_password(&password).map_err(anyhow::Error::msg)?;
            users::migrate(pool).await?;
            let hash = password::hash(password).await?;
            match users::create(pool, &email, &hash, admin).await {
                Ok(id) => println!(
                    "created user {id} <{}>{}",
                    email.as_str(),
                    if admin { " (admin)" } else { "" }
                ),
                Err(users::CreateError::Exists) if exists_ok => {
                    println!("user <{}> exists already; unchanged", email.as_str())
                }
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
        Command::Serve => Ok(()),
    }
}
