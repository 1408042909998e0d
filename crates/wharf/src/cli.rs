//! The command line: clap types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about = "Deploy any service to any environment with one command"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The definition file (default: wharf.yaml in this folder or a parent).
    #[arg(short = 'f', long = "file", global = true, env = "WHARF_FILE")]
    pub file: Option<PathBuf>,
    /// The controller to use (default: this project's local controller, started if needed).
    #[arg(long, global = true, env = "WHARF_CONTROLLER")]
    pub controller: Option<String>,
    /// Output format of listings.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Print only data and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a definition file and report every problem in it.
    Validate,
    /// Print the JSON Schema of wharf.yaml.
    Schema,
    /// Build a service into an immutable, content-addressed artifact and register it.
    Build(BuildArgs),
    /// List built artifacts.
    Artifacts {
        /// Only this service's artifacts.
        service: Option<String>,
    },
    /// Deploy a service (or every service) to an environment.
    ///
    /// Also accepts the form `wharf deploy artifact=SERVICE environment=ENV version=V`.
    Deploy(DeployArgs),
    /// Show what runs where.
    Status {
        #[arg(long = "env", short = 'e')]
        env: Option<String>,
    },
    /// List the deploys of a service in an environment.
    History {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
    },
    /// Go back to an earlier version, with the configuration it ran with.
    Rollback {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
        /// The version to return to (default: the one before the current).
        #[arg(long)]
        to: Option<String>,
    },
    /// Show a service's logs.
    Logs {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
        /// Keep printing new lines as they are written.
        #[arg(long, short = 'F')]
        follow: bool,
        /// Only this instance (its number, as `wharf status` shows it).
        #[arg(long)]
        instance: Option<u32>,
        /// How many lines of the past to show.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
    },
    /// Stop a service in an environment.
    Stop {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
    },
    /// Stop every service of an environment.
    Down {
        #[arg(long = "env", short = 'e')]
        env: String,
    },
    /// Run the controller (with this host's agent in `--dev` mode).
    Server(ServerArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    pub service: String,
    /// The version name; a name never points at two different contents.
    #[arg(long)]
    pub version: String,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// SERVICE, or `artifact=SERVICE environment=ENV version=V` in any order.
    pub target: Vec<String>,
    #[arg(long = "env", short = 'e')]
    pub env: Option<String>,
    /// The version to deploy (built first if the definition says how and it is new).
    /// Default: a version named after the current content, `dev-<digest>`.
    #[arg(long)]
    pub version: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Run the controller and this host's agent in one process, open on loopback only.
    #[arg(long)]
    pub dev: bool,
    /// Where state is kept (default: `.wharf/` beside wharf.yaml, or WHARF_HOME).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
